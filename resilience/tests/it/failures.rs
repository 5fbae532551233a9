//! Failure handling against the real broker: handler deadlines, the
//! retry-topic chain, quarantine of a partition whose records keep
//! exhausting their retries, and a DLT that cannot be written (the
//! partition stalls; nothing commits past the record).

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consumer_core::TopicPartition;
use kafka_wire::ProducerRecord;
use resilience::config::Quarantine;
use resilience::dlt;
use resilience::{CommitPolicy, HandlerError, Processor, ProcessorConfig};

#[tokio::test]
async fn a_handler_past_its_deadline_is_retried_not_waited_for() {
    const N: u32 = 50;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "deadline", 1, N).await;
    let group = testkit::unique_name("deadline");
    // Every 10th record hangs for 30 s on its first attempt.
    let sink = Arc::new(Sink::default());
    let behaviour: Behaviour = Arc::new(|n, attempt| {
        Ok(if n % 10 == 0 && attempt == 1 {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        })
    });
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .handler_timeout(Duration::from_millis(300))
        .backoff(fast_backoff());
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(30))
        .await;
    run.stop().await;
    assert_eq!(
        sink.applied_numbers(),
        (0..N).collect::<Vec<_>>(),
        "in order, each once"
    );
    assert_eq!(
        stats.retried.load(AtomicOrdering::Relaxed),
        5,
        "one retry per hung call"
    );
    assert_eq!(stats.dead_lettered.load(AtomicOrdering::Relaxed), 0);
}

#[tokio::test]
async fn retry_topics_move_failures_off_the_partition_then_to_the_dlt() {
    const N: u32 = 100;
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "retrytopics", 1, N).await;
    let group = testkit::unique_name("retrytopics");
    // n % 10 == 0: always fails (transient-looking); n % 10 == 1: fails once.
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, attempt| match n % 10 {
        0 => Some(HandlerError::Retryable(format!("still down for {n}"))),
        1 if attempt == 1 => Some(HandlerError::Retryable("blip".into())),
        _ => None,
    });
    let mut cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .retry_topics(&[Duration::from_millis(200), Duration::from_millis(400)])
        .dead_letter(testkit::producer_config(&b))
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)));
    cfg.quarantine.after_failures = 0; // ten exhausted records in a row would trip it
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    // Each record finishes once in the source topic, and once per hop.
    let hops = 10 + 10 + 10; // →retry.200ms (always + once), →retry.400ms (always)
    run.wait_finished(u64::from(N) + hops, Duration::from_secs(60))
        .await;
    // Until every hop's commits land (checked again after the stop).
    for t in [
        topic.clone(),
        format!("{topic}.retry.200ms"),
        format!("{topic}.retry.400ms"),
    ] {
        committed_to_end(&b, &group, &t, Duration::from_secs(15)).await;
    }
    run.stop().await;

    let (distinct, dups) = sink.distinct_and_duplicates();
    let want: BTreeSet<u32> = (0..N).filter(|n| n % 10 != 0).collect();
    assert_eq!((distinct, dups), (want, 0));
    let applied = sink.applied_numbers();
    let pos = |x: u32| applied.iter().position(|n| *n == x).unwrap();
    assert!(
        pos(1) > pos(2),
        "record 1's retry did not block the partition"
    );
    assert_eq!(stats.sent_to_retry.load(AtomicOrdering::Relaxed), 30);

    let dead = read_all(
        &b,
        &dlt::dlt_topic(&topic),
        1,
        10,
        false,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(dead.len(), 10, "the always-failing records, once each");
    for r in &dead {
        let n = number(r);
        assert_eq!(n % 10, 0);
        let header = |k: &str| dlt::int_header(r, k);
        assert_eq!(
            header(dlt::ATTEMPTS),
            Some(3),
            "record {n}: source + 2 retry topics"
        );
        assert_eq!(
            header(dlt::ORIGINAL_OFFSET),
            Some(i64::from(n)),
            "origin kept across hops"
        );
        let origin = r
            .headers
            .iter()
            .find(|h| h.key.as_ref() == dlt::ORIGINAL_TOPIC.as_bytes());
        assert_eq!(
            origin.and_then(|h| h.value.as_deref()),
            Some(topic.as_bytes())
        );
    }
    for t in [
        topic.clone(),
        format!("{topic}.retry.200ms"),
        format!("{topic}.retry.400ms"),
    ] {
        let behind = uncommitted_partitions(&b, &admin, &group, &t, 1).await;
        assert!(
            behind.is_empty(),
            "{t}: not committed to the end: {behind:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_partition_quarantines_only_itself() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "quarantine", 2).await;
    let p = kafka_wire::Producer::with_client(admin.clone(), testkit::producer_config(&b));
    for i in 0..20u32 {
        p.send(
            ProducerRecord::new(&topic)
                .partition(0)
                .value(i.to_string()),
        )
        .await
        .unwrap();
    }
    for i in 1000..1200u32 {
        p.send(
            ProducerRecord::new(&topic)
                .partition(1)
                .value(i.to_string()),
        )
        .await
        .unwrap();
    }
    p.flush().await.expect("every record delivered");
    let group = testkit::unique_name("quarantine");
    // Partition 0's dependency is down: every record exhausts its retries.
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, _| {
        (n < 1000).then(|| HandlerError::Retryable(format!("dependency down for {n}")))
    });
    let mut cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .backoff(fast_backoff())
        .dead_letter(testkit::producer_config(&b))
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)));
    cfg.quarantine = Quarantine {
        after_failures: 3,
        pause: Duration::from_secs(120),
    };
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    let healthy_done = testkit::eventually(Duration::from_secs(30), || {
        sink.applied_numbers().len() == 200
    })
    .await;
    // The stuck partition: three records dead-lettered, then quarantined.
    testkit::eventually(Duration::from_secs(30), || {
        stats.dead_lettered.load(AtomicOrdering::Relaxed) >= 3
            && stats.quarantines.load(AtomicOrdering::Relaxed) >= 1
    })
    .await;
    let dead = stats.dead_lettered.load(AtomicOrdering::Relaxed);
    let quarantines = stats.quarantines.load(AtomicOrdering::Relaxed);
    run.stop().await;
    assert!(
        healthy_done,
        "the healthy partition did not finish while the other was quarantined"
    );
    assert_eq!(
        (dead, quarantines),
        (3, 1),
        "3 exhausted records, then quarantine"
    );
    assert_eq!(
        committed_offset(&b, &group, &TopicPartition::new(&topic, 0)).await,
        Some(3)
    );
    assert_eq!(
        committed_offset(&b, &group, &TopicPartition::new(&topic, 1)).await,
        Some(200)
    );
}

#[tokio::test]
async fn without_a_writable_dlt_the_partition_stalls_and_nothing_commits_past_the_record() {
    const N: u32 = 20;
    let b = testkit::require_broker!();
    let (_admin, topic) = topic_with_records(&b, "stall", 1, N).await;
    let group = testkit::unique_name("stall");
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, _| (n == 5).then(|| HandlerError::NonRetryable("poison".into())));
    let mut cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
        .drain_timeout(Duration::from_secs(2));
    cfg.quarantine.after_failures = 0;
    // No dead_letter(...) producer: the failed record cannot be parked.
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    assert!(
        testkit::eventually(Duration::from_secs(30), || stats
            .dlt_write_failures
            .load(AtomicOrdering::Relaxed)
            >= 3)
        .await
    );
    assert!(
        testkit::stays_for(Duration::from_millis(500), || sink.applied_numbers().len()
            == 5)
        .await,
        "a record after the stalled one was handled"
    );
    run.stop().await;
    assert_eq!(
        sink.applied_numbers(),
        (0..5).collect::<Vec<_>>(),
        "nothing after the stalled record"
    );
    assert_eq!(
        committed_offset(&b, &group, &TopicPartition::new(&topic, 0)).await,
        Some(5),
        "committed up to, never past, the record that could not be dead-lettered"
    );
}

#[tokio::test]
async fn an_unavailable_dependency_is_waited_for_never_dead_lettered() {
    const N: u32 = 20;
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "unavailable", 1, N).await;
    let group = testkit::unique_name("unavailable");
    // The dependency is down for the first 8 attempts of every record that
    // reaches it while it is down: far past the policy's 3 attempts, and
    // the retry topics, if any, must not see it either.
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, attempt| {
        (n == 3 && attempt <= 8).then(|| HandlerError::unavailable("connection refused"))
    });
    let mut backoff = fast_backoff();
    backoff.max_delay = Duration::from_millis(40);
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .backoff(backoff)
        .dead_letter(testkit::producer_config(&b))
        .retry_topics(&[Duration::from_millis(100)])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)));
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(30))
        .await;
    committed_to_end(&b, &group, &topic, Duration::from_secs(15)).await;
    run.stop().await;
    assert_eq!(
        sink.applied_numbers(),
        (0..N).collect::<Vec<_>>(),
        "each once, in order: the partition waited for record 3"
    );
    assert_eq!(stats.retried.load(AtomicOrdering::Relaxed), 8);
    assert_eq!(stats.dead_lettered.load(AtomicOrdering::Relaxed), 0);
    assert_eq!(stats.sent_to_retry.load(AtomicOrdering::Relaxed), 0);
    assert!(uncommitted_partitions(&b, &admin, &group, &topic, 1)
        .await
        .is_empty());
}

/// A handler that panics on the record numbered 10 (a batch handler: on
/// the batch holding it); counts the records it handled.
#[derive(Default)]
struct PanicsAt10 {
    handled: std::sync::atomic::AtomicU64,
}

impl resilience::Handler for PanicsAt10 {
    async fn handle(
        &self,
        _: &TopicPartition,
        r: &kafka_wire::records::Record,
    ) -> Result<(), HandlerError> {
        if number(r) == 10 {
            panic!("handler bug at record {}", number(r));
        }
        self.handled.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(())
    }
}

impl resilience::BatchHandler for PanicsAt10 {
    fn handle_batch<'a>(
        &'a self,
        _: &'a TopicPartition,
        records: &'a [kafka_wire::records::Record],
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send + 'a {
        if records.iter().any(|r| number(r) == 10) {
            panic!("handler bug in a batch of {}", records.len()); // before any future
        }
        async move {
            self.handled
                .fetch_add(records.len() as u64, AtomicOrdering::Relaxed);
            Ok(())
        }
    }
}

/// Issue 29, case 1: a handler that panics on one record of 50 (a DLT
/// configured, everything else default). The panic fails that call as a
/// non-retryable error: the record (a batch handler: its batch) goes to
/// the DLT with the panic's message, the lane goes on, the group commits
/// 50, and `run` returns within its drain deadline after shutdown. In
/// every ordering, with a batch handler, and with retry topics.
#[tokio::test]
async fn a_panicking_handler_dead_letters_its_record_and_the_lane_goes_on() {
    const N: u32 = 50;
    let b = testkit::require_broker!();
    for variant in ["partition", "key", "none", "batch", "retry-topics"] {
        let (_admin, topic) = topic_with_records(&b, &format!("panic-{variant}"), 1, N).await;
        let dlt_name = dlt::dlt_topic(&topic); // the runtime creates it
        let group = testkit::unique_name("panic");
        let mut cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
            .set(
                "processor.ordering",
                if variant == "key" || variant == "none" {
                    variant
                } else {
                    "partition"
                },
            )
            .unwrap()
            .dead_letter(testkit::producer_config(&b));
        if variant == "retry-topics" {
            cfg = cfg.retry_topics(&[Duration::from_millis(100)]);
        }
        let handler = Arc::new(PanicsAt10::default());
        let processor = if variant == "batch" {
            Processor::batched(cfg, handler.clone(), 10)
        } else {
            Processor::new(cfg, handler.clone())
        };
        let run = start(processor);
        let stats = run.stats.clone();
        let dead = read_all(&b, &dlt_name, 1, 1, false, Duration::from_secs(30)).await;
        let tp = TopicPartition::new(&topic, 0);
        let committed = testkit::eventually_async(Duration::from_secs(30), || async {
            committed_offset(&b, &group, &tp).await == Some(i64::from(N))
        })
        .await;
        let stopped = tokio::time::timeout(Duration::from_secs(20), run.stop()).await;
        assert!(
            stopped.is_ok(),
            "{variant}: run did not return within 20 s of shutdown"
        );
        assert!(committed, "{variant}: the group did not commit {N}");
        let dead_n = stats.dead_lettered.load(AtomicOrdering::Relaxed);
        let handled = handler.handled.load(AtomicOrdering::Relaxed);
        assert_eq!(
            handled + dead_n,
            u64::from(N),
            "{variant}: every record in one place"
        );
        if variant != "batch" {
            assert_eq!((handled, dead_n), (49, 1), "{variant}");
        }
        let message = dead
            .iter()
            .find(|r| number(r) == 10)
            .and_then(|r| {
                r.headers
                    .iter()
                    .find(|h| h.key.as_ref() == b"kafka_dlt-exception-message")
            })
            .and_then(|h| h.value.clone())
            .unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&message).contains("panicked: handler bug"),
            "{variant}: the DLT record carries the panic: {message:?}"
        );
    }
}
