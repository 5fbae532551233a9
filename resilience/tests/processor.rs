//! The runtime against the real broker: poison records and transient
//! failures with a DLT. Every record ends in exactly one place (the sink or
//! the DLT), transient failures that recover never reach the DLT, DLT
//! headers are complete, and the committed offsets reach the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{
    Client, ClientConfig, NewTopic, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use resilience::processor::HandlerFuture;
use resilience::retry::{BackoffPolicy, HandlerError};
use resilience::{Handler, Processor, ProcessorConfig};

const N: u32 = 1_000;

#[derive(Default)]
struct Sink {
    applied: Mutex<Vec<u32>>,
    attempts: Mutex<HashMap<u32, u32>>,
    /// Fail every 20th record (poison) and every 20th+1 once (transient).
    failures: bool,
    delay: Duration,
}

struct SinkHandler(Arc<Sink>);

impl Handler for SinkHandler {
    fn handle<'a>(&'a self, _tp: &'a TopicPartition, r: &'a Record) -> HandlerFuture<'a> {
        let sink = &self.0;
        Box::pin(async move {
            let n: u32 = std::str::from_utf8(r.value.as_ref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let attempt = {
                let mut a = sink.attempts.lock().unwrap();
                let e = a.entry(n).or_insert(0);
                *e += 1;
                *e
            };
            if sink.failures && n % 20 == 0 {
                return Err(HandlerError::NonRetryable(format!("poison {n}")));
            }
            if sink.failures && n % 20 == 1 && attempt == 1 {
                return Err(HandlerError::Retryable("downstream hiccup".into()));
            }
            tokio::time::sleep(sink.delay).await;
            sink.applied.lock().unwrap().push(n);
            Ok(())
        })
    }
}

/// A new topic of `partitions` partitions holding values "0".."n-1", keyed "k<i>".
async fn topic_with_records(
    b: &testkit::BrokerEnv,
    prefix: &str,
    partitions: i32,
    n: u32,
) -> (Client, String) {
    let admin = Client::connect(
        ClientConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let topic = testkit::unique_name(prefix);
    admin
        .create_topic(NewTopic::new(&topic, partitions))
        .await
        .unwrap();
    let p = Producer::with_client(
        admin.clone(),
        ProducerConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    );
    for i in 0..n {
        p.send(
            ProducerRecord::new(&topic)
                .key(format!("k{i}"))
                .value(i.to_string()),
        )
        .await
        .unwrap();
    }
    p.flush().await;
    (admin, topic)
}

/// A group member reading from the earliest offset, with a short session.
fn group_consumer(b: &testkit::BrokerEnv, group: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .group_id(group)
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("session.timeout.ms", "6000")
        .unwrap()
        .set("heartbeat.interval.ms", "300")
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test]
async fn poison_and_transient_failures_end_in_exactly_one_place() {
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "proc", 3, N).await;
    admin
        .create_topic(NewTopic::new(format!("{topic}.DLT"), 1))
        .await
        .unwrap();

    let group = testkit::unique_name("proc-group");
    let consumer = group_consumer(&b, &group);
    let mut cfg = ProcessorConfig::new(consumer.clone(), &[&topic]);
    cfg.backoff = BackoffPolicy {
        initial: Duration::from_millis(10),
        ..BackoffPolicy::default()
    };
    cfg.commit_interval = Duration::from_millis(200);
    cfg.dlt_producer = Some(
        ProducerConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    );
    let sink = Arc::new(Sink {
        failures: true,
        delay: Duration::from_micros(200),
        ..Sink::default()
    });
    let processor = Processor::new(cfg, SinkHandler(sink.clone()));
    let stats = processor.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        let _ = stop_rx.await;
    }));

    let expected_dlt = (0..N).filter(|n| n % 20 == 0).count() as u64;
    let end = Instant::now() + Duration::from_secs(60);
    while (stats.handled.load(std::sync::atomic::Ordering::Relaxed)
        + stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed))
        < N as u64
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // one more commit interval
    let _ = stop_tx.send(());
    run.await.unwrap().unwrap();

    // The sink: every non-poison record exactly once.
    let applied = sink.applied.lock().unwrap().clone();
    let applied_set: BTreeSet<u32> = applied.iter().copied().collect();
    assert_eq!(
        applied.len(),
        applied_set.len(),
        "a side effect was applied twice"
    );
    let want: BTreeSet<u32> = (0..N).filter(|n| n % 20 != 0).collect();
    assert_eq!(
        applied_set, want,
        "transient failures recovered; poison never applied"
    );

    // The DLT: exactly the poison records, with complete headers.
    let mut dlt_reader = Consumer::connect(
        ConsumerConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .set("auto.offset.reset", "earliest")
            .unwrap()
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    dlt_reader.assign(&[TopicPartition::new(format!("{topic}.DLT"), 0)]);
    let mut dead: BTreeMap<u32, Record> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(15);
    while (dead.len() as u64) < expected_dlt && Instant::now() < end {
        for batch in dlt_reader.poll(Duration::from_millis(200)).await.unwrap() {
            for r in batch.records {
                let n: u32 = std::str::from_utf8(r.value.as_ref().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                dead.insert(n, r);
            }
        }
    }
    assert_eq!(dead.len() as u64, expected_dlt);
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
        ] {
            assert!(names.contains(h), "record {n} lacks {h}");
        }
        assert_eq!(
            r.key.as_deref(),
            Some(format!("k{n}").as_bytes()),
            "original key kept"
        );
    }

    // Offsets: committed up to the end of every partition.
    let ends = admin
        .list_offsets(&topic, OffsetSpec::Latest)
        .await
        .unwrap();
    let checker = Consumer::connect(consumer).await.unwrap();
    let parts: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
    let committed = checker.committed(&parts).await.unwrap();
    for (p, end) in ends {
        assert_eq!(
            committed.get(&TopicPartition::new(&topic, p)),
            Some(&end),
            "partition {p}"
        );
    }
}

#[tokio::test]
async fn a_member_joining_mid_run_causes_no_duplicate_and_no_loss() {
    // The first member is busy when the second joins: the eager revoke waits
    // for the records already running, commits, and hands the queued rest
    // over from exactly there.
    let b = testkit::require_broker!();
    const TOTAL: u32 = 2_000;
    let (_admin, topic) = topic_with_records(&b, "proc-rebalance", 4, TOTAL).await;
    let group = testkit::unique_name("proc-rebalance");
    let consumer = group_consumer(&b, &group);
    let sink = Arc::new(Sink {
        delay: Duration::from_millis(1),
        ..Sink::default()
    });
    let start = |sink: Arc<Sink>| {
        let mut cfg = ProcessorConfig::new(consumer.clone(), &[&topic]);
        cfg.commit_interval = Duration::from_millis(200);
        let processor = Processor::new(cfg, SinkHandler(sink));
        let stats = processor.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(processor.run(async move {
            let _ = stopped.await;
        }));
        (stop, run, stats)
    };
    let (stop1, run1, _) = start(sink.clone());
    let end = Instant::now() + Duration::from_secs(30);
    while sink.applied.lock().unwrap().len() < 300 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stop2, run2, stats2) = start(sink.clone());
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let distinct: BTreeSet<u32> = sink.applied.lock().unwrap().iter().copied().collect();
        if distinct.len() as u32 == TOTAL || Instant::now() > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop1.send(());
    let _ = stop2.send(());
    run1.await.unwrap().unwrap();
    run2.await.unwrap().unwrap();
    let applied = sink.applied.lock().unwrap().clone();
    let distinct: BTreeSet<u32> = applied.iter().copied().collect();
    assert_eq!(distinct.len() as u32, TOTAL, "lost records");
    assert_eq!(
        applied.len(),
        distinct.len(),
        "{} duplicate side effects",
        applied.len() - distinct.len()
    );
    let second = stats2.handled.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        second > 0,
        "the second member never took over any partition"
    );
    println!("handover: the joining member handled {second} of {TOTAL}");
}
