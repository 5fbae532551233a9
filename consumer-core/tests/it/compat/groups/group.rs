//! Group behaviour against the real broker: cooperative rebalancing keeps
//! unaffected partitions flowing, static members restart without a
//! rebalance, and a killed member's partitions move without losing records.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::consumer::ListenerFuture;
use consumer_core::{Committer, Consumer, RebalanceListener, TopicPartition};
use kafka_wire::{Producer, ProducerRecord};

#[derive(Default)]
struct Revocations(Mutex<Vec<TopicPartition>>);

impl RebalanceListener for Revocations {
    fn on_revoked<'a>(
        &'a self,
        _c: &'a Committer,
        parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        self.0.lock().unwrap().extend_from_slice(parts);
        Box::pin(async {})
    }
}

type Deliveries = Arc<Mutex<BTreeMap<TopicPartition, Vec<Instant>>>>;

/// Poll in a loop, recording when each partition delivered a record.
fn spawn_member(
    mut c: Consumer,
    seen: Deliveries,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(batches) = c.poll(Duration::from_millis(50)).await {
                let now = Instant::now();
                let mut s = seen.lock().unwrap();
                for b in batches {
                    if !b.records.is_empty() {
                        s.entry(b.tp).or_default().push(now);
                    }
                }
            }
        }
        c
    })
}

#[tokio::test]
async fn cooperative_join_revokes_only_moved_partitions_and_others_keep_flowing() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "coop", 12).await;
    let group = testkit::unique_name("coop-group");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Steady traffic on every partition: one record per partition every 10 ms.
    let producer = Producer::with_client(
        admin.clone(),
        testkit::producer_builder(&b)
            .linger(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let stop_p = stop.clone();
    let topic_p = topic.clone();
    let traffic = tokio::spawn(async move {
        while !stop_p.load(std::sync::atomic::Ordering::Relaxed) {
            for p in 0..12 {
                let _ = producer
                    .send(ProducerRecord::new(&topic_p).partition(p).value("x"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = producer.flush().await; // traffic only: its sends ignore errors too
    });

    let mut listeners = Vec::new();
    let mut members = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut c = common::connect(
            &b,
            Some(&group),
            &[("partition.assignment.strategy", "cooperative-sticky")],
        )
        .await;
        let l = Arc::new(Revocations::default());
        c.set_listener(l.clone());
        c.subscribe(&[&topic]).unwrap();
        let s: Deliveries = Arc::default();
        members.push(spawn_member(c, s.clone(), stop.clone()));
        listeners.push(l);
        seen.push(s);
    }
    // Wait until the three members each deliver from 4 distinct partitions.
    let recent = |s: &Deliveries| -> BTreeSet<TopicPartition> {
        let now = Instant::now();
        s.lock()
            .unwrap()
            .iter()
            .filter(|(_, ts)| {
                ts.last()
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_millis(300))
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    };
    // Every member delivers from `each` partitions, together all 12.
    let settled = |members: &[&Deliveries], each: usize| {
        let sets: Vec<BTreeSet<TopicPartition>> = members.iter().map(|s| recent(s)).collect();
        let union: BTreeSet<&TopicPartition> = sets.iter().flatten().collect();
        sets.iter().all(|s| s.len() == each) && union.len() == 12
    };
    let three: Vec<&Deliveries> = seen.iter().collect();
    assert!(
        testkit::eventually(Duration::from_secs(30), || settled(&three, 4)).await,
        "the group never settled"
    );
    let owned_before: Vec<BTreeSet<TopicPartition>> = seen.iter().map(&recent).collect();
    for l in &listeners {
        l.0.lock().unwrap().clear(); // count only revocations caused by the join
    }

    // A fourth member joins.
    let joined_at = Instant::now();
    let mut c4 = common::connect(
        &b,
        Some(&group),
        &[("partition.assignment.strategy", "cooperative-sticky")],
    )
    .await;
    c4.subscribe(&[&topic]).unwrap();
    let s4: Deliveries = Arc::default();
    members.push(spawn_member(c4, s4.clone(), stop.clone()));
    // Until the group settles again: four members, three partitions each.
    let four: Vec<&Deliveries> = seen.iter().chain([&s4]).collect();
    testkit::eventually(Duration::from_secs(30), || settled(&four, 3)).await;
    let revoked_at_join: Vec<Vec<TopicPartition>> = listeners
        .iter()
        .map(|l| l.0.lock().unwrap().clone())
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();
    for m in members {
        m.await.unwrap().close(Duration::from_secs(5)).await;
    }
    let moved: BTreeSet<TopicPartition> = s4.lock().unwrap().keys().cloned().collect();
    assert_eq!(moved.len(), 3, "the new member took 3 partitions");

    // Only the moved partitions were revoked from the old members (before close).
    let revoked: BTreeSet<TopicPartition> = revoked_at_join.into_iter().flatten().collect();
    assert_eq!(
        revoked, moved,
        "cooperative: exactly the moved partitions were revoked"
    );

    // Unaffected partitions kept delivering: the longest gap after the join.
    let mut worst = Duration::ZERO;
    for (i, s) in seen.iter().enumerate() {
        for (tp, times) in s.lock().unwrap().iter() {
            if moved.contains(tp) || !owned_before[i].contains(tp) {
                continue;
            }
            let window: Vec<&Instant> = times.iter().filter(|t| **t >= joined_at).collect();
            for w in window.windows(2) {
                worst = worst.max(w[1].duration_since(*w[0]));
            }
        }
    }
    println!("cooperative rebalance: longest delivery gap on an unaffected partition = {worst:?}");
    assert!(
        worst < Duration::from_secs(2),
        "unaffected partitions stalled for {worst:?}"
    );
}

#[tokio::test]
async fn static_member_restart_within_session_timeout_causes_no_rebalance() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "static", 4).await;
    let group = testkit::unique_name("static-group");
    let make = |instance: &str| {
        common::config(&b, Some(&group))
            .set("group.instance.id", instance)
            .unwrap()
            .build()
            .unwrap()
    };

    let mut a = Consumer::connect(make("instance-a")).await.unwrap();
    a.subscribe(&[&topic]).unwrap();
    let mut other = Consumer::connect(make("instance-b")).await.unwrap();
    other.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        a.poll(Duration::from_millis(50)).await.unwrap();
        other.poll(Duration::from_millis(50)).await.unwrap();
        if a.assignment().len() == 2
            && other.assignment().len() == 2
            && a.generation().is_some()
            && other.generation().is_some()
        {
            break;
        }
    }
    let generation = other.generation().expect("stable");
    let a_parts = a.assignment();
    a.close(Duration::from_secs(5)).await; // static: no LeaveGroup

    let mut restarted = Consumer::connect(make("instance-a")).await.unwrap();
    restarted.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while restarted.assignment().len() < 2 && Instant::now() < end {
        restarted.poll(Duration::from_millis(50)).await.unwrap();
        other.poll(Duration::from_millis(50)).await.unwrap();
    }
    for _ in 0..10 {
        other.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(
        restarted.assignment(),
        a_parts,
        "the same partitions come back"
    );
    assert_eq!(
        other.generation(),
        Some(generation),
        "no rebalance for the other member"
    );
}

#[tokio::test]
async fn killed_member_partitions_move_after_session_timeout_and_nothing_committed_is_lost() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "killed", 2).await;
    testkit::produce(
        &admin,
        &b,
        (0..200u32).map(|i| {
            ProducerRecord::new(&topic)
                .partition((i % 2) as i32)
                .value(format!("{i}"))
        }),
    )
    .await;
    let group = testkit::unique_name("killed-group");

    // The victim owns both partitions, consumes and commits 100 records, then dies.
    let mut victim = common::connect(&b, Some(&group), &[("max.poll.records", "10")]).await;
    victim.subscribe(&[&topic]).unwrap();
    let mut handled: BTreeSet<String> = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(30);
    while handled.len() < 100 && Instant::now() < end {
        for batch in victim.poll(Duration::from_millis(100)).await.unwrap() {
            for r in &batch.records {
                handled.insert(String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap());
            }
            let next = batch.records.last().unwrap().offset + 1;
            victim.commit(&[(batch.tp.clone(), next)]).await.unwrap();
        }
    }
    drop(victim); // killed: no LeaveGroup, no final commit

    let killed_at = Instant::now();
    let mut survivor = common::connect(&b, Some(&group), &[]).await;
    survivor.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    while handled.len() < 200 && Instant::now() < end {
        for batch in survivor.poll(Duration::from_millis(100)).await.unwrap() {
            for r in &batch.records {
                handled.insert(String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap());
            }
        }
    }
    assert_eq!(
        handled.len(),
        200,
        "every record handled by the victim or the survivor"
    );
    assert!(
        killed_at.elapsed() >= Duration::from_secs(4),
        "the partitions moved only after the session timeout"
    );
}

/// Sleeps in `on_revoked` for longer than the session timeout.
struct SlowRevoke(Duration, Mutex<usize>);

impl RebalanceListener for SlowRevoke {
    fn on_revoked<'a>(&'a self, _c: &'a Committer, _p: &'a [TopicPartition]) -> ListenerFuture<'a> {
        *self.1.lock().unwrap() += 1;
        Box::pin(tokio::time::sleep(self.0))
    }
    fn on_lost<'a>(&'a self, _c: &'a Committer, _p: &'a [TopicPartition]) -> ListenerFuture<'a> {
        panic!("partitions were lost: the member was expelled during its slow callback");
    }
}

#[tokio::test]
async fn heartbeats_continue_while_a_slow_revoke_callback_runs() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "slow-revoke", 4).await;
    let group = testkit::unique_name("slow-revoke-group");
    let coop = || {
        common::classic(
            common::config(&b, Some(&group)),
            "partition.assignment.strategy",
            "cooperative-sticky",
        )
        .build()
        .unwrap()
    };
    let mut a = Consumer::connect(coop()).await.unwrap();
    let slow = Arc::new(SlowRevoke(Duration::from_secs(8), Mutex::new(0))); // session is 6 s
    a.set_listener(slow.clone());
    a.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() < 4 && Instant::now() < end {
        a.poll(Duration::from_millis(50)).await.unwrap();
    }
    let mut other = Consumer::connect(coop()).await.unwrap();
    other.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    while other.assignment().len() < 2 && Instant::now() < end {
        a.poll(Duration::from_millis(50)).await.unwrap(); // runs the 8 s callback once
        other.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(*slow.1.lock().unwrap(), 1, "the slow callback ran");
    assert_eq!(other.assignment().len(), 2);
    assert_eq!(
        a.assignment().len(),
        2,
        "a kept its other partitions (not expelled)"
    );
}

#[tokio::test]
async fn a_member_that_keeps_polling_stays_past_max_poll_interval() {
    // Regression: the group task once consumed poll notifications without
    // recording them, so a member polling every 50 ms still "timed out"
    // after max.poll.interval.ms and left (losing its partitions).
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "keeps-polling", 2).await;
    let group = testkit::unique_name("keeps-polling");
    let mut c = common::connect(&b, Some(&group), &[("max.poll.interval.ms", "1500")]).await;
    let revoked = Arc::new(Revocations::default());
    c.set_listener(revoked.clone());
    c.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while c.generation().is_none() && Instant::now() < end {
        let _ = c.poll(Duration::from_millis(50)).await;
    }
    let generation = c.generation().expect("joined");
    let end = Instant::now() + Duration::from_millis(4_500); // three intervals
    while Instant::now() < end {
        c.poll(Duration::from_millis(50)).await.unwrap();
    }
    if testkit::group_protocol().is_none() {
        assert_eq!(
            c.generation(),
            Some(generation),
            "the member left and rejoined"
        );
    } else {
        // KIP-848 epochs also move while the member stays (each
        // reconciliation bumps it); leaving would lose the partitions.
        assert_eq!(c.assignment().len(), 2, "the member left");
    }
    assert!(
        revoked.0.lock().unwrap().is_empty(),
        "partitions were given up"
    );
    c.close(Duration::from_secs(5)).await;
}

// ---- the group follows metadata: added partitions, topics created later, patterns ----

type Seen = BTreeMap<TopicPartition, Vec<i64>>;

/// Poll until `done(seen)` (records' offsets per partition), failing after `within`.
async fn poll_until(
    c: &mut Consumer,
    seen: &mut Seen,
    within: Duration,
    what: &str,
    done: impl Fn(&Consumer, &Seen) -> bool,
) {
    let end = Instant::now() + within;
    while !done(c, seen) {
        assert!(
            Instant::now() < end,
            "{what}: not within {within:?}; consumed {seen:?}, assigned {:?}",
            c.assignment()
        );
        for batch in c.poll(Duration::from_millis(50)).await.unwrap() {
            seen.entry(batch.tp)
                .or_default()
                .extend(batch.records.iter().map(|r| r.offset));
        }
    }
}

/// A group member that starts at the end (`latest`) and checks metadata every second.
async fn latest_member(b: &testkit::BrokerEnv, group: &str) -> Consumer {
    common::connect(
        b,
        Some(group),
        &[
            ("auto.offset.reset", "latest"),
            ("metadata.max.age.ms", "1000"),
        ],
    )
    .await
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

// The member stops polling while partitions appear and records are
// produced, so its position on them is set only after the records exist:
// with `latest` they would be skipped; they are consumed because
// partitions that appear after subscribe start at the earliest offset.

#[tokio::test]
async fn added_partitions_are_assigned_and_consumed_from_their_start_even_with_latest() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "grow", 1).await;
    let group = testkit::unique_name("grow-group");
    let mut c = latest_member(&b, &group).await;
    c.subscribe(&[&topic]).unwrap();
    let mut seen = Seen::new();
    poll_until(
        &mut c,
        &mut seen,
        Duration::from_secs(20),
        "join",
        |c, _| c.generation().is_some() && c.assignment() == [tp(&topic, 0)],
    )
    .await;

    admin.create_partitions(&topic, 3).await.unwrap();
    testkit::produce(
        &admin,
        &b,
        (0..10u32).map(|i| {
            ProducerRecord::new(&topic)
                .partition(2)
                .value(format!("{i}"))
        }),
    )
    .await;

    let started = Instant::now();
    poll_until(
        &mut c,
        &mut seen,
        Duration::from_secs(30),
        "10 records of the added partition",
        |_, seen| seen.get(&tp(&topic, 2)).map_or(0, Vec::len) >= 10,
    )
    .await;
    println!(
        "added partition consumed {:?} after the records were produced",
        started.elapsed()
    );
    assert_eq!(
        seen.get(&tp(&topic, 2)),
        Some(&(0..10).collect::<Vec<i64>>()),
        "every record of the added partition, once, in order"
    );
    assert_eq!(
        c.assignment(),
        vec![tp(&topic, 0), tp(&topic, 1), tp(&topic, 2)]
    );
    c.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_topic_subscribed_before_it_exists_is_consumed_once_created() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::unique_name("later");
    let group = testkit::unique_name("later-group");
    let mut c = latest_member(&b, &group).await;
    c.subscribe(&[&topic]).unwrap();
    let mut seen = Seen::new();
    poll_until(
        &mut c,
        &mut seen,
        Duration::from_secs(20),
        "join",
        |c, _| c.generation().is_some(),
    )
    .await;
    assert!(c.assignment().is_empty());

    admin
        .create_topic(kafka_wire::NewTopic::new(&topic, 2))
        .await
        .unwrap();
    testkit::produce(
        &admin,
        &b,
        (0..10u32).map(|i| {
            ProducerRecord::new(&topic)
                .partition((i % 2) as i32)
                .value(format!("{i}"))
        }),
    )
    .await;

    poll_until(
        &mut c,
        &mut seen,
        Duration::from_secs(30),
        "10 records of the topic created after subscribe",
        |_, seen| seen.values().map(Vec::len).sum::<usize>() >= 10,
    )
    .await;
    for p in 0..2 {
        assert_eq!(
            seen.get(&tp(&topic, p)),
            Some(&(0..5).collect::<Vec<i64>>()),
            "partition {p}: every record, once"
        );
    }
    c.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pattern_subscription_picks_up_a_matching_topic_created_later_and_only_that() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let prefix = testkit::unique_name("pat");
    let first = testkit::create_topic(&admin, &format!("{prefix}-a"), 1).await;
    let group = testkit::unique_name("pat-group");
    let mut c = latest_member(&b, &group).await;
    c.subscribe_pattern(&format!("^{prefix}-.*")).unwrap();
    let mut seen = Seen::new();
    poll_until(
        &mut c,
        &mut seen,
        Duration::from_secs(20),
        "join",
        |c, _| c.generation().is_some() && c.assignment() == [tp(&first, 0)],
    )
    .await;

    // Created first, so any metadata that shows the matching topic shows it too.
    let other = format!("x{prefix}-c");
    admin
        .create_topic(kafka_wire::NewTopic::new(&other, 1))
        .await
        .unwrap();
    let matching = format!("{prefix}-b");
    admin
        .create_topic(kafka_wire::NewTopic::new(&matching, 2))
        .await
        .unwrap();
    for t in [&matching, &other] {
        testkit::produce(
            &admin,
            &b,
            (0..10u32).map(|i| {
                ProducerRecord::new(t)
                    .partition((i % 2) as i32 % if t == &other { 1 } else { 2 })
                    .value(format!("{i}"))
            }),
        )
        .await;
    }

    poll_until(
        &mut c,
        &mut seen,
        Duration::from_secs(30),
        "10 records of the topic matched later",
        |_, seen| {
            (0..2)
                .map(|p| seen.get(&tp(&matching, p)).map_or(0, Vec::len))
                .sum::<usize>()
                >= 10
        },
    )
    .await;
    assert_eq!(
        c.assignment(),
        vec![tp(&first, 0), tp(&matching, 0), tp(&matching, 1)],
        "the non-matching topic is not assigned"
    );
    assert!(
        !seen.keys().any(|k| k.topic == other),
        "nothing consumed from {other}: {seen:?}"
    );
    c.close(Duration::from_secs(5)).await;
}

/// Issue 29, case 7b: a static member (alone in its group, so also its
/// leader) restarts within its session timeout subscribed to topic Y
/// instead of X. The broker hands a static member that rejoins a stable
/// group its old assignment (KIP-345; a static leader is told to skip
/// assigning, KIP-814): partitions of X. Not its subscription: it takes
/// none of them and rejoins, which rebalances with Y, and it reads Y's 10
/// records. Under both group protocols (`groups::`).
#[tokio::test]
async fn a_static_member_restarted_with_another_subscription_gets_the_new_topic() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let x = testkit::create_topic(&admin, "static-x", 2).await;
    let y = testkit::create_topic(&admin, "static-y", 2).await;
    let records = (0..10).map(|i| ProducerRecord::new(&y).value(format!("{i}")));
    testkit::produce(&admin, &b, records).await;
    let group = testkit::unique_name("static-resub");
    let make = || {
        common::config(&b, Some(&group))
            .set("group.instance.id", "a")
            .unwrap()
            .set("auto.offset.reset", "earliest")
            .unwrap()
            .build()
            .unwrap()
    };
    let mut first = Consumer::connect(make()).await.unwrap();
    first.subscribe(&[&x]).unwrap();
    let mut seen = Seen::new();
    poll_until(
        &mut first,
        &mut seen,
        Duration::from_secs(30),
        "X assigned",
        |c, _| c.assignment().len() == 2,
    )
    .await;
    first.close(Duration::from_secs(5)).await; // static: no LeaveGroup

    let mut second = Consumer::connect(make()).await.unwrap();
    second.subscribe(&[&y]).unwrap();
    let mut seen = Seen::new();
    poll_until(
        &mut second,
        &mut seen,
        Duration::from_secs(30),
        "Y's 10 records",
        |_, s| s.values().map(Vec::len).sum::<usize>() == 10,
    )
    .await;
    assert!(
        seen.keys().all(|tp| tp.topic == y),
        "only Y's records: {seen:?}"
    );
    assert!(
        second.assignment().iter().all(|tp| tp.topic == y),
        "{:?}",
        second.assignment()
    );
}
