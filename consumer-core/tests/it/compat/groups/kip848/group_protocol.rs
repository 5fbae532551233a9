//! `group.protocol` against the real broker: KIP-848's consumer protocol
//! where the broker speaks it (Kafka 4.x), the classic one where it does
//! not (Kafka 3.9 by default), and `auto` choosing between them.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, GroupProtocol, TopicPartition};
use kafka_wire::ProducerRecord;

/// Is KIP-848 on at the broker (see `common::speaks_848`)?
async fn speaks_848(b: &testkit::BrokerEnv) -> bool {
    common::speaks_848(b).await
}

/// Settings without the classic-only ones (refused under `consumer`).
fn member(b: &testkit::BrokerEnv, group: &str, protocol: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .set("group.id", group)
        .unwrap()
        .set("group.protocol", protocol)
        .unwrap()
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("fetch.max.wait.ms", "50")
        .unwrap()
        .build()
        .unwrap()
}

type Seen = Arc<Mutex<Vec<(TopicPartition, i64)>>>;

/// Poll and commit until `stop`; every record seen goes to `seen`.
fn spawn_member(
    mut c: Consumer,
    seen: Seen,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match c.poll(Duration::from_millis(100)).await {
                Ok(batches) => {
                    let mut s = seen.lock().unwrap();
                    for b in batches {
                        for r in &b.records {
                            s.push((b.tp.clone(), r.offset));
                        }
                    }
                }
                Err(e) => panic!("poll failed: {e}"),
            }
            let _ = c.commit_positions().await;
        }
        c
    })
}

#[tokio::test]
async fn two_members_share_the_partitions_and_consume_every_record_once_committed() {
    let b = testkit::require_broker!();
    let kip848 = speaks_848(&b).await;
    // Explicit `consumer` where the broker has it; `auto` must end on
    // classic where it does not.
    let (protocol, expected) = if kip848 {
        ("consumer", GroupProtocol::Consumer)
    } else {
        ("auto", GroupProtocol::Classic)
    };
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "kip848", 4).await;
    let group = testkit::unique_name("kip848-group");
    let t = topic.clone();
    testkit::produce(
        &admin,
        &b,
        (0..200u32).map(|i| {
            ProducerRecord::new(&t)
                .partition((i % 4) as i32)
                .value(format!("{i}"))
        }),
    )
    .await;

    let seen: Seen = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    let mut first = Consumer::connect(member(&b, &group, protocol))
        .await
        .unwrap();
    first.subscribe(&[&topic]).unwrap();
    handles.push(spawn_member(first, seen.clone(), stop.clone()));
    // The second joins while the first consumes: the broker moves half.
    testkit::eventually(Duration::from_secs(30), || !seen.lock().unwrap().is_empty()).await;
    let mut second = Consumer::connect(member(&b, &group, protocol))
        .await
        .unwrap();
    second.subscribe(&[&topic]).unwrap();
    handles.push(spawn_member(second, seen.clone(), stop.clone()));

    let distinct = || -> usize {
        let seen = seen.lock().unwrap();
        seen.iter().cloned().collect::<BTreeSet<_>>().len()
    };
    assert!(
        testkit::eventually(Duration::from_secs(60), || distinct() == 200).await,
        "only {} of 200 records consumed",
        distinct()
    );
    // Both members end with two partitions each, under the expected protocol.
    let deadline = Instant::now() + Duration::from_secs(60);
    let members = loop {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut members = Vec::new();
        for h in handles.drain(..) {
            members.push(h.await.unwrap());
        }
        let sizes: Vec<usize> = members.iter().map(|c| c.assignment().len()).collect();
        if sizes == [2, 2] || Instant::now() > deadline {
            assert_eq!(
                sizes,
                [2, 2],
                "the broker balances 4 partitions over 2 members"
            );
            break members;
        }
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        for c in members {
            handles.push(spawn_member(c, seen.clone(), stop.clone()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The admin view (kafka-lab groups describe): ConsumerGroupDescribe for
    // a KIP-848 group, with member epochs, types and assignments.
    let d = admin.describe_group(&group).await.unwrap();
    assert_eq!(d.members.len(), 2, "{d:?}");
    let owned: usize = d
        .members
        .iter()
        .map(|m| {
            if kip848 {
                m.assigned.len()
            } else {
                consumer_core::Assignment::decode(&m.assignment)
                    .unwrap()
                    .partitions
                    .len()
            }
        })
        .sum();
    assert_eq!(owned, 4, "{d:?}");
    if kip848 {
        assert!(d.group_epoch.is_some_and(|e| e > 0), "{d:?}");
        for m in &d.members {
            assert_eq!(m.member_type, Some("consumer"));
            assert!(m.member_epoch.is_some_and(|e| e > 0), "{m:?}");
        }
    } else {
        assert_eq!(d.group_epoch, None);
    }
    for c in &members {
        assert_eq!(c.group_protocol(), Some(expected));
        assert!(
            c.generation().is_some_and(|g| g > 0),
            "a member epoch / generation"
        );
    }
    let parts: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new(&topic, p)).collect();
    // Every partition's position was committed by its owner.
    let committed = std::cell::RefCell::new(std::collections::BTreeMap::new());
    testkit::eventually_async(Duration::from_secs(20), || async {
        let mut all = std::collections::BTreeMap::new();
        for c in &members {
            c.commit_positions().await.unwrap();
            all.extend(c.committed(&parts).await.unwrap());
        }
        let done = all.values().all(|o| *o == 50) && all.len() == 4;
        *committed.borrow_mut() = all;
        done
    })
    .await;
    let committed = committed.into_inner();
    assert_eq!(committed.len(), 4, "{committed:?}");
    assert!(committed.values().all(|o| *o == 50), "{committed:?}");
    for c in members {
        c.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn explicit_consumer_on_a_broker_without_kip_848_fails_naming_the_fix() {
    let b = testkit::require_broker!();
    if speaks_848(&b).await {
        return; // Kafka 4.x: the test above covers it; this one is for 3.9
    }
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "kip848-off", 1).await;
    let group = testkit::unique_name("kip848-off");
    let mut c = Consumer::connect(member(&b, &group, "consumer"))
        .await
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match c.poll(Duration::from_millis(200)).await {
            Err(e) => break e.to_string(),
            Ok(_) => assert!(
                Instant::now() < deadline,
                "no error on a broker without KIP-848"
            ),
        }
    };
    assert!(err.contains("group.protocol=classic"), "{err}");
}

/// KIP-848's static membership: while a member with a `group.instance.id`
/// is alive, a second member with the same id is refused
/// (UNRELEASED_INSTANCE_ID), and its poll says so; the first keeps its
/// partitions.
#[tokio::test]
async fn a_second_live_member_with_the_same_instance_id_is_refused_naming_it() {
    let b = testkit::require_broker!();
    if !speaks_848(&b).await {
        return; // Kafka 3.9 by default: no KIP-848 rules to check
    }
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "static848", 2).await;
    let group = testkit::unique_name("static848");
    let make = || {
        let mut c = member(&b, &group, "consumer");
        c.group_instance_id = Some("instance-1".into());
        c
    };
    let mut first = Consumer::connect(make()).await.unwrap();
    first.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while first.assignment().len() < 2 && Instant::now() < end {
        first.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(first.assignment().len(), 2, "the first member owns both");

    // Refused for good once a whole session plus 5 s has passed with the
    // id still held (until then it may be a crashed predecessor's): 11 s
    // on the harness broker (6 s sessions); 50 s on Kafka 3.9, which does
    // not tell a group's session timeout (45 s, Kafka's default, assumed).
    let mut second = Consumer::connect(make()).await.unwrap();
    second.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(70);
    let refused = loop {
        first.poll(Duration::from_millis(50)).await.unwrap();
        match second.poll(Duration::from_millis(50)).await {
            Err(e) => break e.to_string(),
            Ok(_) if Instant::now() > end => panic!("the second member was never refused"),
            Ok(_) => {}
        }
    };
    assert!(
        refused.contains("UNRELEASED_INSTANCE_ID") && refused.contains("group.instance.id"),
        "the error names the cause and the setting: {refused}"
    );
    assert!(
        second.assignment().is_empty(),
        "the refused member owns nothing"
    );
    for _ in 0..5 {
        first.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(
        first.assignment().len(),
        2,
        "the live member keeps its partitions"
    );
    first.close(Duration::from_secs(5)).await;
}
