//! A rolling deploy that switches a running group's protocol, member by
//! member, against the real broker: the runtime's members start under the
//! classic protocol and are replaced one at a time by members under
//! KIP-848 (`group.protocol=consumer`), then back. Kafka 4.x converts the
//! group between the two while members of both kinds share it
//! (`group.consumer.migration.policy`, bidirectional by default).
//!
//! Asserted: every record handled, nothing committed for a partition after
//! its member gave it up, commits never move back, the group committed to
//! the end, and the group is a KIP-848 group after the upgrade.
//!
//! On a broker without KIP-848 (Kafka 3.9 by default) there is no
//! protocol to migrate to: the test says so and passes.

use std::sync::Arc;
use std::time::Duration;

use resilience::observe::EventLog;
use resilience::{CommitPolicy, ProcessorConfig};
use sim_tests::support::{self, taking, Running, Sink, SinkHandler};

const N: u32 = 3_000;
const PARTITIONS: i32 = 4;

/// A runtime member of `group` under `protocol`, handling every record in
/// 2 ms and committing every 100 ms.
fn member(
    b: &testkit::BrokerEnv,
    group: &str,
    topic: &str,
    protocol: &str,
    sink: &Arc<Sink>,
    log: &Arc<EventLog>,
) -> Running {
    let consumer = consumer_core::ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .and_then(|c| c.set("group.id", group))
        .and_then(|c| c.set("group.protocol", protocol))
        .and_then(|c| c.set("auto.offset.reset", "earliest"))
        .expect("properties")
        .build()
        .expect("config");
    let cfg = ProcessorConfig::new(consumer, &[topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)))
        .observer(log.clone());
    support::start(resilience::Processor::new(
        cfg,
        SinkHandler::new(sink, taking(Duration::from_millis(2))),
    ))
}

#[tokio::test]
async fn a_rolling_switch_from_classic_to_kip_848_and_back_loses_nothing() {
    let b = testkit::require_broker!();
    if !testkit::speaks_848(&b).await {
        eprintln!("the broker has KIP-848 off: no protocol to migrate to");
        return;
    }
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "migrate", PARTITIONS, N, |i| format!("k{i}")).await;
    let group = testkit::unique_name("migrate");
    let sink = Arc::new(Sink::default());
    let mut logs: Vec<Arc<EventLog>> = Vec::new();
    let mut start = |protocol: &str| {
        let log = Arc::new(EventLog::default());
        logs.push(log.clone());
        member(&b, &group, &topic, protocol, &sink, &log)
    };
    let handled_past = |n: usize| {
        let sink = sink.clone();
        async move {
            assert!(
                testkit::eventually(Duration::from_secs(60), || sink.distinct() >= n).await,
                "stuck at {} of {n} records handled",
                sink.distinct()
            );
        }
    };

    // Two classic members.
    let a = start("classic");
    let b1 = start("classic");
    handled_past(300).await;
    // Rolling upgrade: each is stopped (drains and commits) and replaced
    // by a KIP-848 member.
    b1.stop().await;
    let b2 = start("consumer");
    handled_past(900).await;
    a.stop().await;
    let a2 = start("consumer");
    handled_past(1_500).await;
    let upgraded = admin.describe_group(&group).await.expect("describe");
    // And back: a classic member replaces one of them.
    b2.stop().await;
    let b3 = start("classic");
    assert!(
        testkit::eventually(Duration::from_secs(90), || sink.distinct() >= N as usize).await,
        "only {} of {N} records handled",
        sink.distinct()
    );
    let to_end = support::committed_to_end(&b, &group, &topic, Duration::from_secs(20)).await;
    a2.stop().await;
    b3.stop().await;

    let (distinct, duplicates) = sink.distinct_and_duplicates();
    eprintln!(
        "migration: {} distinct records handled, {duplicates} duplicates; after the upgrade: \
         group epoch {:?}, member types {:?}",
        distinct.len(),
        upgraded.group_epoch,
        upgraded
            .members
            .iter()
            .map(|m| m.member_type)
            .collect::<Vec<_>>()
    );
    assert_eq!(distinct.len(), N as usize, "records lost");
    assert!(
        to_end,
        "the group did not commit to the end of every partition"
    );
    for log in &logs {
        assert_eq!(
            log.commits_after_revoke(),
            vec![],
            "a commit landed after its partition was given up"
        );
        assert_eq!(log.commit_regressions(), 0, "a commit moved back");
    }
    assert!(
        upgraded.group_epoch.is_some(),
        "after every member switched, the group is a KIP-848 group: {upgraded:?}"
    );
    assert!(
        upgraded
            .members
            .iter()
            .all(|m| m.member_type == Some("consumer")),
        "{upgraded:?}"
    );
}
