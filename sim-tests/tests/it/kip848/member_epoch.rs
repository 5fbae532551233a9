//! Commits under the KIP-848 member epoch, against the real broker: a
//! commit built under one epoch that lands after the member's epoch moved
//! on (another member joined and the member gave partitions up meanwhile).
//!
//! Kafka 4.3 checks each partition against the epoch it was assigned at
//! (KIP-1251): such a commit is accepted for the partitions the member
//! kept and refused (STALE_MEMBER_EPOCH) for the ones that moved. Earlier
//! 4.x brokers refuse the whole commit as stale, and the client retries
//! the kept partitions under its current epoch. Either way the outcome
//! asserted here is the same: the kept partitions are committed, the
//! moved ones never are, and the caller hears which partition moved.
//!
//! On a broker without KIP-848 (Kafka 3.9 by default) there is nothing to
//! race: the test says so and passes.

use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, ConsumerError, TopicPartition};
use sim_tests::proxy::{FaultProxy, Faults};

/// OffsetCommit's API key.
const OFFSET_COMMIT: i16 = 8;
const PARTITIONS: i32 = 4;
const RECORDS: u32 = 200;

/// A KIP-848 member that never commits on its own.
fn member(b: &testkit::BrokerEnv, group: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .expect("bootstrap")
        .set("group.id", group)
        .and_then(|c| c.set("group.protocol", "consumer"))
        .and_then(|c| c.set("auto.offset.reset", "earliest"))
        .and_then(|c| c.set("enable.auto.commit", "false"))
        .expect("properties")
        .build()
        .expect("config")
}

#[tokio::test]
async fn a_commit_racing_an_epoch_bump_lands_for_kept_partitions_and_never_for_moved_ones() {
    let b = testkit::require_broker!();
    if !testkit::speaks_848(&b).await {
        eprintln!("the broker has KIP-848 off: no member epoch to race");
        return;
    }
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "epoch-race", PARTITIONS, RECORDS, |i| {
        format!("k{i}")
    })
    .await;
    let all: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(&topic, p))
        .collect();
    let group = testkit::unique_name("epoch-race");
    let proxy = FaultProxy::new(7);
    let mut cfg = member(&b, &group);
    cfg.client.connector = proxy.connector();
    let mut first = Consumer::connect(cfg).await.expect("connect");
    first.subscribe(&[&topic]).expect("subscribe");

    // The first member owns every partition and has read every record.
    let mut read = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (read < RECORDS as usize || first.assignment().len() < all.len())
        && Instant::now() < deadline
    {
        let batches = first.poll(Duration::from_millis(100)).await.expect("poll");
        read += batches.iter().map(|p| p.records.len()).sum::<usize>();
    }
    assert_eq!(read, RECORDS as usize, "records read");
    assert_eq!(first.assignment().len(), all.len(), "partitions owned");
    let epoch_before = first.generation().expect("a stable member");
    let offsets: Vec<(TopicPartition, i64)> = all
        .iter()
        .map(|tp| (tp.clone(), first.position(tp).expect("a position")))
        .collect();

    // Its commits are held back 4 s on the way to the broker (heartbeats
    // travel on their own connection and are not held): the commit is
    // built under `epoch_before` and arrives after the epoch moved on.
    proxy.set(Faults {
        delay_request: Some((OFFSET_COMMIT, Duration::from_secs(4))),
        ..Faults::default()
    });
    let committer = first.committer().clone();
    let commit = tokio::spawn({
        let offsets = offsets.clone();
        async move { committer.commit(&offsets).await }
    });

    // A second member joins: the first gives two partitions up and moves
    // to a newer epoch while its commit is held.
    let mut second = Consumer::connect(member(&b, &group))
        .await
        .expect("connect");
    second.subscribe(&[&topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !(first.assignment().len() == all.len() / 2
            && first.generation().is_some_and(|g| g > epoch_before))
    {
        first.poll(Duration::from_millis(50)).await.expect("poll");
        second.poll(Duration::from_millis(50)).await.expect("poll");
    }
    let epoch_after = first.generation();
    assert!(
        epoch_after.is_some_and(|g| g > epoch_before),
        "the first member's epoch did not move on ({epoch_before} → {epoch_after:?})"
    );
    assert!(
        !commit.is_finished(),
        "the commit landed before the epoch moved on: nothing raced"
    );
    let kept = first.assignment();
    assert_eq!(kept.len(), all.len() / 2, "partitions kept");
    let moved: Vec<TopicPartition> = all
        .iter()
        .filter(|tp| !kept.contains(tp))
        .cloned()
        .collect();

    let result = commit.await.expect("commit task");
    proxy.set(Faults::default());
    match &result {
        Err(ConsumerError::NotOwned { tp, .. }) => {
            assert!(moved.contains(tp), "NotOwned named {tp}, which was kept")
        }
        other => panic!("expected NotOwned naming a moved partition, got {other:?}"),
    }
    let committed = first.committed(&all).await.expect("committed");
    for (tp, offset) in &offsets {
        if kept.contains(tp) {
            assert_eq!(
                committed.get(tp),
                Some(offset),
                "the kept partition {tp} was not committed"
            );
        } else {
            assert_eq!(
                committed.get(tp),
                None,
                "the moved partition {tp} was committed by its old owner"
            );
        }
    }
    first.close(Duration::from_secs(5)).await;
    second.close(Duration::from_secs(5)).await;
}
