//! Offsets and memory against the real broker: completed offsets beyond a
//! stuck record travel in the commit metadata and are not redone after a
//! crash; a DedupStore turns the redelivery after a crash into zero
//! duplicate side effects; in-flight bytes stay within the bound.

mod common;

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consumer_core::{Consumer, TopicPartition};
use kafka_wire::{NewTopic, ProducerRecord};
use resilience::dedup::{DedupStore, FileDedup};
use resilience::{CommitPolicy, KeySource, Ordering, Processor, ProcessorConfig};

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
        eventually(Duration::from_secs(30), || first.applied_numbers().len()
            == N as usize - 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // a few commit intervals
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

#[tokio::test]
async fn in_flight_bytes_stay_within_the_bound_under_a_burst() {
    const N: u32 = 1_500;
    const VALUE: usize = 10 * 1024;
    const BOUND: usize = 1024 * 1024;
    const MAX_POLL: usize = 50;
    let b = testkit::require_broker!();
    let admin = admin(&b).await;
    let topic = testkit::unique_name("burst");
    admin.create_topic(NewTopic::new(&topic, 2)).await.unwrap();
    let p = kafka_wire::Producer::with_client(admin.clone(), producer_config(&b));
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
    p.flush().await;

    let group = testkit::unique_name("burst");
    let consumer = consumer_core::ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .group_id(&group)
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("max.poll.records", &MAX_POLL.to_string())
        .unwrap()
        .build()
        .unwrap();
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
    fn handle<'a>(
        &'a self,
        _tp: &'a TopicPartition,
        r: &'a kafka_wire::records::Record,
    ) -> resilience::processor::HandlerFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let v = r.value.as_deref().unwrap_or_default();
            let id = String::from_utf8_lossy(v.split(|b| *b == b':').next().unwrap_or_default())
                .into_owned();
            self.0.lock().unwrap().insert(id);
            Ok(())
        })
    }
}
