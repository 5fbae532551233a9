//! A group member's heartbeats do not wait for its other requests, against
//! the real broker: the member's commits are held back past its session
//! (8 s against 6 s) by the fault proxy, while the group task's periodic
//! metadata refreshes travel the same (Control) connection behind them.
//! The member must stay in the group: same generation, same partitions,
//! and the held commit lands.

use std::time::{Duration, Instant};

use consumer_core::{Consumer, TopicPartition};
use sim_tests::proxy::{FaultProxy, Faults};
use sim_tests::support;

/// OffsetCommit's API key.
const OFFSET_COMMIT: i16 = 8;

#[tokio::test]
async fn heartbeats_go_on_while_commits_are_held_past_the_session() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "slow-control", 2, 20, |i| format!("k{i}")).await;
    let group = testkit::unique_name("slow-control");
    let proxy = FaultProxy::new(3);
    let mut cfg = support::group_consumer_with(
        &b,
        &group,
        &[
            ("metadata.max.age.ms", "500"),
            ("enable.auto.commit", "false"),
        ],
    );
    cfg.client.connector = proxy.connector();
    let mut c = Consumer::connect(cfg).await.expect("connect");
    c.subscribe(&[&topic]).expect("subscribe");
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (read < 20 || c.assignment().len() < 2 || c.generation().is_none())
        && Instant::now() < deadline
    {
        let batches = c.poll(Duration::from_millis(100)).await.expect("poll");
        read += batches.iter().map(|p| p.records.len()).sum::<usize>();
    }
    assert_eq!((read, c.assignment().len()), (20, 2), "joined and read");
    let generation = c.generation();
    let offsets: Vec<(TopicPartition, i64)> = c
        .assignment()
        .into_iter()
        .map(|tp| {
            let at = c.position(&tp).expect("a position");
            (tp, at)
        })
        .collect();

    proxy.set(Faults {
        delay_request: Some((OFFSET_COMMIT, Duration::from_secs(8))),
        ..Faults::default()
    });
    let committer = c.committer().clone();
    let commit = tokio::spawn(async move { committer.commit(&offsets).await });
    // Past the 6 s session, polling all along.
    let end = Instant::now() + Duration::from_secs(9);
    while Instant::now() < end {
        c.poll(Duration::from_millis(100)).await.expect("poll");
    }
    assert_eq!(
        c.generation(),
        generation,
        "the member was dropped from the group while its commit was held"
    );
    assert_eq!(c.assignment().len(), 2, "it kept its partitions");
    commit
        .await
        .expect("commit task")
        .expect("the held commit landed");
    c.close(Duration::from_secs(5)).await;
}
