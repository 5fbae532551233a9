//! The runtime against the real broker: every record ends in exactly one
//! place (the sink or the DLT), ordering modes keep their promise, and a
//! rebalance in the middle of work loses nothing, duplicates nothing and
//! commits nothing for partitions already given up.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kafka_wire::records::Record;
use kafka_wire::NewTopic;
use resilience::observe::EventLog;
use resilience::{HandlerError, Ordering, Processor, ProcessorConfig};

#[tokio::test]
async fn poison_and_transient_failures_end_in_exactly_one_place() {
    const N: u32 = 1_000;
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "proc", 3, N).await;
    admin
        .create_topic(NewTopic::new(format!("{topic}.DLT"), 1))
        .await
        .unwrap();
    let group = testkit::unique_name("proc-group");
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .backoff(fast_backoff())
        .commit_policy(resilience::CommitPolicy::Interval(Duration::from_millis(
            200,
        )))
        .dead_letter(testkit::producer_config(&b));
    // Every 20th record is poison; every 20th+1 fails once.
    let sink = Arc::new(Sink::default());
    let behaviour: Behaviour = Arc::new(|n, attempt| match n % 20 {
        0 => Err(HandlerError::NonRetryable(format!("poison {n}"))),
        1 if attempt == 1 => Err(HandlerError::Retryable("downstream hiccup".into())),
        _ => Ok(Duration::from_micros(200)),
    });
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    committed_to_end(&b, &group, &topic, Duration::from_secs(15)).await;
    run.stop().await;

    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!(dups, 0, "a side effect was applied twice");
    let want: BTreeSet<u32> = (0..N).filter(|n| n % 20 != 0).collect();
    assert_eq!(
        distinct, want,
        "transient failures recovered; poison never applied"
    );

    // The DLT: exactly the poison records, once each, with complete headers.
    let expected_dlt = (0..N).filter(|n| n % 20 == 0).count();
    let dead = read_all(
        &b,
        &format!("{topic}.DLT"),
        1,
        expected_dlt,
        false,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        dead.len(),
        expected_dlt,
        "each poison record dead-lettered once"
    );
    let dead: BTreeMap<u32, Record> = dead.into_iter().map(|r| (number(&r), r)).collect();
    assert!(
        dead.keys().all(|n| n % 20 == 0),
        "only poison records are dead-lettered"
    );
    for (n, r) in &dead {
        let names: BTreeSet<String> = r.headers.iter().map(|h| h.key_str().into_owned()).collect();
        for h in [
            "kafka_dlt-original-topic",
            "kafka_dlt-original-partition",
            "kafka_dlt-original-offset",
            "kafka_dlt-original-timestamp",
            "kafka_dlt-original-consumer-group",
            "kafka_dlt-exception-fqcn",
            "kafka_dlt-exception-message",
            "retry_topic-attempts",
        ] {
            assert!(names.contains(h), "record {n} lacks {h}");
        }
        assert_eq!(
            r.key.as_deref(),
            Some(format!("k{n}").as_bytes()),
            "original key kept"
        );
    }
    let behind = uncommitted_partitions(&b, &admin, &group, &topic, 3).await;
    assert!(
        behind.is_empty(),
        "committed offsets short of the end: {behind:?}"
    );
}

#[tokio::test]
async fn a_member_joining_mid_run_causes_no_duplicate_no_loss_and_no_commit_after_revoke() {
    // The first member is busy when the second joins: the eager revoke waits
    // for the records already running, commits, and hands the queued rest
    // over from exactly there. No commit lands for a partition between its
    // revocation and its next assignment.
    const TOTAL: u32 = 2_000;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "proc-rebalance", 4, TOTAL).await;
    let group = testkit::unique_name("proc-rebalance");
    let consumer = group_consumer(&b, &group);
    let sink = Arc::new(Sink::default());
    let handler = || SinkHandler::new(&sink, taking(Duration::from_millis(1)));
    let (log1, log2) = (Arc::new(EventLog::default()), Arc::new(EventLog::default()));
    let cfg = |log: &Arc<EventLog>| {
        ProcessorConfig::new(consumer.clone(), &[&topic])
            .commit_policy(resilience::CommitPolicy::Interval(Duration::from_millis(
                100,
            )))
            .observer(log.clone())
    };
    let run1 = start(Processor::new(cfg(&log1), handler()));
    assert!(testkit::eventually(Duration::from_secs(30), || sink.applied().len() >= 300).await);
    let run2 = start(Processor::new(cfg(&log2), handler()));
    let stats2 = run2.stats.clone();
    testkit::eventually(Duration::from_secs(60), || {
        sink.distinct_and_duplicates().0.len() as u32 == TOTAL
    })
    .await;
    run1.stop().await;
    run2.stop().await;

    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!(distinct.len() as u32, TOTAL, "lost records");
    assert_eq!(dups, 0, "duplicate side effects");
    let second = stats2.handled.load(AtomicOrdering::Relaxed);
    assert!(
        second > 0,
        "the second member never took over any partition"
    );
    for (name, log) in [("first", &log1), ("second", &log2)] {
        let late = log.commits_after_revoke();
        assert!(
            late.is_empty(),
            "{name} member committed after revoke: {late:?}"
        );
    }
    println!("handover: the joining member handled {second} of {TOTAL}");
}

#[tokio::test]
async fn every_ordering_mode_handles_each_record_once_and_keeps_its_order() {
    const N: u32 = 600;
    let b = testkit::require_broker!();
    // 8 keys over 2 partitions: per-key mode may run keys of one partition
    // in parallel, and must keep each key's order.
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "proc-modes", 2, N, |i| format!("key{}", i % 8)).await;
    for mode in [
        Ordering::PerPartition,
        Ordering::PerKey,
        Ordering::Unordered,
    ] {
        let group = testkit::unique_name("proc-modes");
        let sink = Arc::new(Sink::default());
        let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
            .ordering(mode)
            .concurrency(16);
        let handler = SinkHandler::new(&sink, taking(Duration::from_millis(2)));
        let run = start(Processor::new(cfg, handler));
        run.wait_finished(u64::from(N), Duration::from_secs(60))
            .await;
        run.stop().await;

        let (distinct, dups) = sink.distinct_and_duplicates();
        assert_eq!(
            (distinct.len() as u32, dups),
            (N, 0),
            "{mode:?}: lost or duplicated"
        );
        let applied = sink.applied();
        let peak = sink.peak_running();
        // Producer order within a key is offset order (same key → same partition).
        let mut per_key: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut per_partition: HashMap<i32, Vec<u32>> = HashMap::new();
        for (p, n) in &applied {
            per_key.entry(n % 8).or_default().push(*n);
            per_partition.entry(*p).or_default().push(*n);
        }
        let sorted = |v: &Vec<u32>| v.windows(2).all(|w| w[0] < w[1]);
        match mode {
            Ordering::PerPartition => {
                assert!(per_partition.values().all(sorted), "partition order broken");
                assert!(
                    peak <= 2,
                    "more than one record per partition at once: {peak}"
                );
            }
            Ordering::PerKey => {
                assert!(per_key.values().all(sorted), "key order broken");
                assert!(
                    peak > 2,
                    "keys of a partition never ran in parallel (peak {peak})"
                );
            }
            Ordering::Unordered => assert!(peak > 2, "no parallelism (peak {peak})"),
        }
        println!("{mode:?}: peak {peak} records at once");
    }
}

#[tokio::test]
async fn a_batch_handler_gets_consecutive_records_of_a_partition() {
    const N: u32 = 500;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "proc-batch", 1, N).await;
    let group = testkit::unique_name("proc-batch");
    let sink = Arc::new(Sink::default());
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic]);
    let run = start(Processor::batched(
        cfg,
        SinkHandler::new(&sink, instant()),
        50,
    ));
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    run.stop().await;
    let applied = sink.applied_numbers();
    assert_eq!(applied, (0..N).collect::<Vec<_>>(), "in order, each once");
    let sizes = sink.batch_sizes();
    assert!(
        sizes.iter().all(|s| *s <= 50),
        "a batch above max_batch: {sizes:?}"
    );
    assert!(sizes.iter().any(|s| *s > 1), "never batched: {sizes:?}");
}

/// When each partition's ordinary records were handled, and how many
/// slow ones started.
#[derive(Default)]
struct Timeline(
    std::sync::Mutex<Vec<(i32, std::time::Instant)>>,
    std::sync::atomic::AtomicUsize,
);

impl Timeline {
    fn slow_started(&self) -> usize {
        self.1.load(AtomicOrdering::SeqCst)
    }
    fn partitions(&self) -> BTreeSet<i32> {
        self.0.lock().unwrap().iter().map(|e| e.0).collect()
    }
    fn first(&self) -> Option<std::time::Instant> {
        self.0.lock().unwrap().first().map(|e| e.1)
    }
}

/// A record whose value is "slow" takes 4 s; the others none.
struct SlowOnMarker(Arc<Timeline>);

impl resilience::Handler for SlowOnMarker {
    async fn handle(
        &self,
        tp: &consumer_core::TopicPartition,
        r: &Record,
    ) -> Result<(), HandlerError> {
        if r.value.as_deref() == Some(&b"slow"[..]) {
            self.0 .1.fetch_add(1, AtomicOrdering::SeqCst);
            tokio::time::sleep(Duration::from_secs(4)).await;
        } else {
            let now = std::time::Instant::now();
            self.0 .0.lock().unwrap().push((tp.partition, now));
        }
        Ok(())
    }
}

/// Cooperative rebalancing keeps the partitions that stay flowing, even
/// while the revoked ones take seconds to drain: the revoke's listener
/// runs beside the poll loop, not inside it.
#[tokio::test]
async fn a_slow_revoke_does_not_stop_the_partitions_that_stay() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "slow-revoke", 4).await;
    let group = testkit::unique_name("slow-revoke");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = tokio::spawn(produce_steadily(
        testkit::producer_config(&b),
        topic.clone(),
        0,
        400,
        stop.clone(),
    ));
    let strategy = [("partition.assignment.strategy", "cooperative-sticky")];
    let cfg = || {
        ProcessorConfig::new(group_consumer_with(&b, &group, &strategy), &[&topic])
            .ordering(Ordering::Unordered)
            .concurrency(32)
    };
    let first = Arc::new(Timeline::default());
    let a = start(Processor::new(cfg(), SlowOnMarker(first.clone())));
    assert!(testkit::eventually(Duration::from_secs(30), || first.partitions().len() == 4).await);
    // A slow record in flight on every partition: a revoke waits for it.
    let slow = (0..4).map(|p| {
        kafka_wire::ProducerRecord::new(&topic)
            .partition(p)
            .value("slow")
    });
    testkit::produce(&admin, &b, slow).await;
    assert!(testkit::eventually(Duration::from_secs(30), || first.slow_started() == 4).await);

    let joined = std::time::Instant::now();
    let second = Arc::new(Timeline::default());
    let member_b = start(Processor::new(cfg(), SlowOnMarker(second.clone())));
    assert!(testkit::eventually(Duration::from_secs(60), || second.first().is_some()).await);
    let b_started = second.first().unwrap();
    // Until the second member handles every partition it got (2 of 4).
    testkit::eventually(Duration::from_secs(30), || second.partitions().len() >= 2).await;
    stop.store(true, AtomicOrdering::SeqCst);
    let _ = producing.await;
    member_b.stop().await;
    a.stop().await;

    assert!(
        b_started - joined >= Duration::from_secs(3),
        "the moved partitions were handed over after {:?}: the revoke did not wait for the slow records, so this test proves nothing",
        b_started - joined
    );
    let moved = second.partitions();
    let events = first.0.lock().unwrap().clone();
    let kept: Vec<i32> = (0..4).filter(|p| !moved.contains(p)).collect();
    assert!(!kept.is_empty() && kept.len() < 4, "kept {kept:?}");
    for p in kept {
        let mut times: Vec<_> = events
            .iter()
            .filter(|e| e.0 == p && e.1 >= joined && e.1 <= b_started)
            .map(|e| e.1)
            .collect();
        times.insert(0, joined);
        times.push(b_started);
        let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            gap < Duration::from_secs(1),
            "partition {p} stayed with the first member but stopped for {gap:?} while it drained the revoked ones"
        );
    }
}

/// Wait (up to `within`) until `group` has committed the log end of every
/// partition of `topic`; the partitions that never got there otherwise.
async fn fully_committed(
    b: &testkit::BrokerEnv,
    admin: &kafka_wire::Client,
    group: &str,
    topic: &str,
    partitions: i32,
    within: Duration,
) -> BTreeMap<i32, (Option<i64>, i64)> {
    let missing = std::cell::RefCell::new(BTreeMap::new());
    testkit::eventually_async(within, || async {
        let now = uncommitted_partitions(b, admin, group, topic, partitions).await;
        let done = now.is_empty();
        *missing.borrow_mut() = now;
        done
    })
    .await;
    missing.into_inner()
}

#[tokio::test]
async fn a_running_processor_picks_up_added_partitions_and_commits_their_records() {
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "grow-proc", 1, 20).await;
    let group = testkit::unique_name("grow-proc-group");
    let consumer = group_consumer_with(&b, &group, &[("metadata.max.age.ms", "1000")]);
    let cfg = ProcessorConfig::new(consumer, &[&topic]).commit_policy(
        resilience::CommitPolicy::Interval(Duration::from_millis(100)),
    );
    let sink = Arc::new(Sink::default());
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, instant())));
    assert_eq!(run.wait_finished(20, Duration::from_secs(30)).await, 20);

    admin.create_partitions(&topic, 3).await.unwrap();
    testkit::produce(
        &admin,
        &b,
        (20..50u32).map(|i| {
            kafka_wire::ProducerRecord::new(&topic)
                .partition((i % 3) as i32)
                .value(i.to_string())
        }),
    )
    .await;
    assert_eq!(
        run.wait_finished(50, Duration::from_secs(30)).await,
        50,
        "the records of the added partitions were handled"
    );
    let missing = fully_committed(&b, &admin, &group, &topic, 3, Duration::from_secs(15)).await;
    assert!(
        missing.is_empty(),
        "committed offset is not the log end (partition → (committed, end)): {missing:?}"
    );
    run.stop().await;

    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!(dups, 0);
    assert_eq!(distinct, (0..50).collect::<BTreeSet<u32>>());
}

#[tokio::test]
async fn a_processor_with_a_topic_pattern_handles_a_matching_topic_created_later() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let prefix = testkit::unique_name("proc-pat");
    let group = testkit::unique_name("proc-pat-group");
    let consumer = group_consumer_with(&b, &group, &[("metadata.max.age.ms", "1000")]);
    let cfg = ProcessorConfig::new(consumer, &[])
        .topic_pattern(format!("{prefix}-.*"))
        .commit_policy(resilience::CommitPolicy::Interval(Duration::from_millis(
            100,
        )));
    let sink = Arc::new(Sink::default());
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, instant())));

    let topic = format!("{prefix}-orders");
    admin.create_topic(NewTopic::new(&topic, 2)).await.unwrap();
    testkit::produce(
        &admin,
        &b,
        (0..20u32).map(|i| {
            kafka_wire::ProducerRecord::new(&topic)
                .partition((i % 2) as i32)
                .value(i.to_string())
        }),
    )
    .await;
    assert_eq!(run.wait_finished(20, Duration::from_secs(30)).await, 20);
    let missing = fully_committed(&b, &admin, &group, &topic, 2, Duration::from_secs(15)).await;
    assert!(
        missing.is_empty(),
        "not committed to the log end: {missing:?}"
    );
    run.stop().await;
    assert_eq!(sink.distinct(), 20);
}

#[tokio::test]
async fn a_topic_pattern_cannot_be_combined_with_retry_topics() {
    // Refused before connecting: no broker needed.
    let consumer = consumer_core::ConsumerConfig::builder()
        .bootstrap("127.0.0.1:1")
        .unwrap()
        .group_id("g")
        .build()
        .unwrap();
    let cfg = ProcessorConfig::new(consumer, &[])
        .topic_pattern("orders-.*")
        .retry_topics(&[Duration::from_secs(1)]);
    let sink = Arc::new(Sink::default());
    let err = Processor::new(cfg, SinkHandler::new(&sink, instant()))
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("topic_pattern"), "{err}");
}
