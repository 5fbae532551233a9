//! The runtime on a share group (KIP-932) against the real broker: each
//! record's outcome becomes one acknowledgement (handled → ACCEPT, a
//! retryable failure → RELEASE and a redelivery whose count is the
//! attempt, failed for good → the runtime's DLT then ACCEPT, or REJECT
//! without one), and ordering other than unordered is refused. Kafka 4.2+
//! with share groups on; on a broker without them each test says so and
//! stops.

use crate::common;

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consumer_core::share::{ShareConsumer, ShareConsumerConfig, ShareError};
use kafka_wire::{Client, ConfigResource};
use resilience::dlt;
use resilience::{HandlerError, Ordering, Processor, ProcessorConfig, Stats};

/// A share consumer config of `group` on the test broker.
fn share_config(b: &testkit::BrokerEnv, group: &str) -> ShareConsumerConfig {
    ShareConsumerConfig::builder()
        .set("bootstrap.servers", &b.bootstrap)
        .unwrap()
        .set("group.id", group)
        .unwrap()
        .set("fetch.max.wait.ms", "200")
        .unwrap()
        .build()
        .unwrap()
}

/// A new share group reading from the earliest offset (the group config
/// `share.auto.offset.reset`), or `None` when the broker has no share
/// groups (the error names the fix).
async fn share_group(b: &testkit::BrokerEnv, admin: &Client, prefix: &str) -> Option<String> {
    share_group_with(b, admin, prefix, &[]).await
}

/// [`share_group`] with more group configs.
async fn share_group_with(
    b: &testkit::BrokerEnv,
    admin: &Client,
    prefix: &str,
    configs: &[(&str, &str)],
) -> Option<String> {
    let group = testkit::unique_name(prefix);
    let mut probe = ShareConsumer::connect(share_config(b, &group))
        .await
        .expect("connect");
    match probe.subscribe(&["probe-no-such-topic"]).await {
        Ok(()) => {}
        Err(e @ ShareError::Unsupported { .. }) => {
            eprintln!("SKIPPED (no share groups on this broker): {e}");
            return None;
        }
        Err(e) => panic!("subscribe: {e}"),
    }
    let _ = probe.close().await;
    let mut set = vec![("share.auto.offset.reset", Some("earliest"))];
    set.extend(configs.iter().map(|(k, v)| (*k, Some(*v))));
    admin
        .alter_configs(&ConfigResource::Group(group.clone()), &set)
        .await
        .expect("set the share group's configs");
    Some(group)
}

/// Every record of the group acknowledged: a new member gets nothing.
async fn nothing_left(b: &testkit::BrokerEnv, group: &str, topic: &str) {
    let mut c = ShareConsumer::connect(share_config(b, group))
        .await
        .expect("connect");
    c.subscribe(&[topic]).await.expect("subscribe");
    let end = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < end {
        let got = c.poll(Duration::from_millis(500)).await.expect("poll");
        assert!(
            got.is_empty(),
            "every record was acknowledged, yet {} came again: {:?}",
            got.len(),
            got.iter()
                .map(|r| (r.offset(), r.delivery_count))
                .collect::<Vec<_>>()
        );
    }
    let _ = c.close().await;
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(AtomicOrdering::Relaxed)
}

/// Wait until the broker answered `accepted` ACCEPTs and `released`
/// RELEASEs (or fail after 30 s).
async fn acknowledged(stats: &Stats, accepted: u64, released: u64) {
    let ok = testkit::eventually(Duration::from_secs(30), || {
        load(&stats.accepted) >= accepted && load(&stats.released) >= released
    })
    .await;
    assert!(
        ok,
        "accepted {} of {accepted}, released {} of {released}",
        load(&stats.accepted),
        load(&stats.released)
    );
}

#[tokio::test]
async fn every_record_is_acknowledged_once_whatever_its_outcome() {
    const N: u32 = 60;
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "share-outcomes", 2, N).await;
    let Some(group) = share_group(&b, &admin, "share-outcomes").await else {
        return;
    };
    // n % 10: 3 fails once (retryable), 7 is poison, 9 always fails
    // (retryable: released twice, dead-lettered at its third delivery).
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, attempt| match n % 10 {
        3 if attempt == 1 => Some(HandlerError::retryable("blip")),
        7 => Some(HandlerError::fatal("poison")),
        9 => Some(HandlerError::retryable("still down")),
        _ => None,
    });
    let cfg = ProcessorConfig::share_group(share_config(&b, &group), &[&topic])
        .backoff(fast_backoff())
        .dead_letter(testkit::producer_config(&b));
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    // Every record ACCEPTed once (handled, or in our DLT); 3s released
    // once, 9s twice.
    acknowledged(&stats, u64::from(N), 6 + 12).await;
    run.stop().await;

    let (distinct, dups) = sink.distinct_and_duplicates();
    let want: std::collections::BTreeSet<u32> =
        (0..N).filter(|n| n % 10 != 7 && n % 10 != 9).collect();
    assert_eq!((distinct, dups), (want, 0), "each handled once");
    assert_eq!(load(&stats.accepted), u64::from(N), "one ACCEPT per record");
    assert_eq!(load(&stats.released), 18);
    assert_eq!(load(&stats.rejected), 0);
    assert_eq!(load(&stats.ack_failures), 0);
    assert_eq!(
        load(&stats.retried),
        0,
        "no retry in place: the broker redelivers"
    );
    for n in (0..N).filter(|n| n % 10 == 3) {
        assert_eq!(
            sink.attempt(n),
            3,
            "record {n}: two calls (this one is the third)"
        );
    }

    let dead = read_all(
        &b,
        &dlt::dlt_topic(&topic),
        2,
        12,
        false,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        dead.len(),
        12,
        "the poison and the exhausted records, once each"
    );
    for r in &dead {
        let n = number(r);
        let attempts = dlt::int_header(r, dlt::ATTEMPTS);
        match n % 10 {
            7 => assert_eq!(attempts, Some(1), "record {n}: poison, first delivery"),
            9 => assert_eq!(
                attempts,
                Some(3),
                "record {n}: the delivery count is the attempt"
            ),
            _ => panic!("record {n} was dead-lettered"),
        }
        let origin = r
            .headers
            .iter()
            .find(|h| h.key.as_ref() == dlt::ORIGINAL_CONSUMER_GROUP.as_bytes())
            .and_then(|h| h.value.as_deref());
        assert_eq!(
            origin,
            Some(group.as_bytes()),
            "record {n}: the share group"
        );
    }
    nothing_left(&b, &group, &topic).await;
}

#[tokio::test]
async fn without_a_dlt_a_record_failed_for_good_is_rejected() {
    const N: u32 = 20;
    let b = testkit::require_broker!();
    let (admin, topic) = topic_with_records(&b, "share-reject", 1, N).await;
    let Some(group) = share_group(&b, &admin, "share-reject").await else {
        return;
    };
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, _| (n % 5 == 0).then(|| HandlerError::fatal("poison")));
    let cfg = ProcessorConfig::share_group(share_config(&b, &group), &[&topic]);
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    let ok = testkit::eventually(Duration::from_secs(30), || {
        load(&stats.accepted) >= 16 && load(&stats.rejected) >= 4
    })
    .await;
    assert!(
        ok,
        "accepted {}, rejected {}",
        load(&stats.accepted),
        load(&stats.rejected)
    );
    run.stop().await;
    assert_eq!(
        (
            load(&stats.accepted),
            load(&stats.rejected),
            load(&stats.ack_failures)
        ),
        (16, 4, 0)
    );
    assert_eq!(sink.distinct_and_duplicates().1, 0);
    nothing_left(&b, &group, &topic).await;
}

#[tokio::test]
async fn ordering_on_a_share_group_is_refused_saying_why() {
    let b = testkit::require_broker!();
    for ordering in [Ordering::PerKey, Ordering::PerPartition] {
        let cfg = ProcessorConfig::share_group(share_config(&b, "never-joined"), &["t"])
            .ordering(ordering);
        let sink = Arc::new(Sink::default());
        let e = Processor::new(cfg, SinkHandler::new(&sink, instant()))
            .run(std::future::pending())
            .await
            .expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("share groups do not keep order"), "{text}");
    }
}

/// Kafka 4.4 or later (RENEW on by default: `share.renew.acknowledge.enable`).
fn renew_available() -> bool {
    let version = std::env::var("KAFKA_BROKER_VERSION").unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (4, 4)
}

/// The 40 s handler under a 30 s lock, scaled to the shortest lock
/// a group may set (`group.share.min.record.lock.duration.ms`, 15 s): a
/// 20 s handler. The runtime RENEWs the lock at half its length, so the
/// record is never redelivered, and is ACCEPTed once.
#[tokio::test]
async fn renew_keeps_a_long_handlers_record_past_its_lock() {
    let b = testkit::require_broker!();
    if !renew_available() {
        eprintln!("SKIPPED (RENEW needs Kafka 4.4 here)");
        return;
    }
    let (admin, topic) = topic_with_records(&b, "share-renew", 1, 2).await;
    let lock = [("share.record.lock.duration.ms", "15000")];
    let Some(group) = share_group_with(&b, &admin, "share-renew", &lock).await else {
        return;
    };
    let sink = Arc::new(Sink::default());
    let behaviour: Behaviour = Arc::new(|n, _| {
        Ok(if n == 0 {
            Duration::from_secs(20)
        } else {
            Duration::ZERO
        })
    });
    let cfg = ProcessorConfig::share_group(share_config(&b, &group), &[&topic]);
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    run.wait_finished(2, Duration::from_secs(45)).await;
    acknowledged(&stats, 2, 0).await;
    run.stop().await;
    assert_eq!(sink.distinct_and_duplicates().1, 0, "handled once each");
    assert_eq!(
        sink.attempt(0),
        2,
        "one call before this one: never redelivered"
    );
    assert!(load(&stats.renewed) >= 1, "the lock was renewed");
    assert_eq!(
        (
            load(&stats.accepted),
            load(&stats.released),
            load(&stats.ack_failures)
        ),
        (2, 0, 0)
    );
    nothing_left(&b, &group, &topic).await;
}

/// With the group's own dead-letter queue (KIP-1191: the group config
/// `errors.deadletterqueue.topic.name`, a `dlq.` topic allowed by
/// `errors.deadletterqueue.group.enable`), a poison record is REJECTed and
/// the broker writes it there with its `__dlq.errors.*` headers, even
/// though the runtime has a DLT producer; the runtime's DLT stays empty.
#[tokio::test]
async fn with_the_groups_dlq_the_broker_writes_the_rejected_record() {
    const N: u32 = 20;
    let b = testkit::require_broker!();
    if !renew_available() {
        eprintln!("SKIPPED (the share-group DLQ needs Kafka 4.4)");
        return;
    }
    let (admin, topic) = topic_with_records(&b, "share-dlq", 1, N).await;
    let dlq = testkit::unique_name("dlq.share");
    admin
        .create_topic(
            kafka_wire::NewTopic::new(&dlq, 1)
                .config("errors.deadletterqueue.group.enable", "true"),
        )
        .await
        .expect("create the DLQ topic");
    let configs = [
        ("errors.deadletterqueue.topic.name", dlq.as_str()),
        ("errors.deadletterqueue.copy.record.enable", "true"),
    ];
    let Some(group) = share_group_with(&b, &admin, "share-dlq", &configs).await else {
        return;
    };
    let sink = Arc::new(Sink::default());
    let behaviour = failing(|n, _| (n % 5 == 0).then(|| HandlerError::fatal("poison")));
    let cfg = ProcessorConfig::share_group(share_config(&b, &group), &[&topic])
        .dead_letter(testkit::producer_config(&b));
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, behaviour)));
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    let ok = testkit::eventually(Duration::from_secs(30), || {
        load(&stats.accepted) >= 16 && load(&stats.rejected) >= 4
    })
    .await;
    assert!(
        ok,
        "accepted {}, rejected {}",
        load(&stats.accepted),
        load(&stats.rejected)
    );
    run.stop().await;

    let dead = read_all(&b, &dlq, 1, 4, false, Duration::from_secs(30)).await;
    let header = |r: &kafka_wire::records::Record, k: &str| {
        r.headers
            .iter()
            .find(|h| h.key.as_ref() == k.as_bytes())
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let mut offsets: Vec<String> = dead
        .iter()
        .map(|r| {
            assert_eq!(
                header(r, "__dlq.errors.topic").as_deref(),
                Some(topic.as_str())
            );
            assert_eq!(
                header(r, "__dlq.errors.group").as_deref(),
                Some(group.as_str())
            );
            assert_eq!(number(r) % 5, 0, "the record copied");
            header(r, "__dlq.errors.offset").expect("the offset header")
        })
        .collect();
    offsets.sort();
    assert_eq!(offsets.len(), 4, "each poison record once: {offsets:?}");
    let ours = read_all(
        &b,
        &dlt::dlt_topic(&topic),
        1,
        1,
        false,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        ours.is_empty(),
        "the runtime's DLT got {} records",
        ours.len()
    );
    nothing_left(&b, &group, &topic).await;
}
