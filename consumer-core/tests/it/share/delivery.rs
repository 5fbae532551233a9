//! What a share group delivers, and how often: acknowledged once,
//! released and delivered again, shared by two members, lock renewed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::share::AcknowledgeType;

use super::{poll_until, share_consumer, share_group, subscribe};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_record_is_delivered_and_acknowledged_exactly_once() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "share-once", 1, 50, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-once").await;
    let mut c = share_consumer(&b, &group, &[("share.acknowledgement.mode", "explicit")]).await;
    if subscribe(&mut c, &[&topic]).await.is_none() {
        return;
    }

    let mut delivered: BTreeMap<i64, u16> = BTreeMap::new();
    let mut accepted: Vec<i64> = Vec::new();
    let end = Instant::now() + WAIT;
    while accepted.len() < 50 && Instant::now() < end {
        let records = c.poll(Duration::from_millis(500)).await.unwrap();
        for r in &records {
            assert!(
                delivered.insert(r.offset(), r.delivery_count).is_none(),
                "offset {} twice",
                r.offset()
            );
            c.acknowledge(r, AcknowledgeType::Accept).unwrap();
        }
        for o in c.commit_sync(Duration::from_secs(10)).await.unwrap() {
            assert!(o.error.is_none(), "{o:?}");
            assert_eq!(o.ack, AcknowledgeType::Accept);
            accepted.extend(o.offsets);
        }
    }
    accepted.sort_unstable();
    assert_eq!(
        accepted,
        (0..50).collect::<Vec<i64>>(),
        "each offset accepted once"
    );
    assert!(
        delivered.values().all(|n| *n == 1),
        "first deliveries: {delivered:?}"
    );
    let again = delivered.keys().next().copied().unwrap();
    let e = c
        .acknowledge(
            &consumer_core::share::ShareRecord {
                tp: consumer_core::TopicPartition::new(&topic, 0),
                topic_id: uuid_of(&admin, &topic).await,
                record: kafka_wire::Record {
                    offset: again,
                    timestamp: 0,
                    key: None,
                    value: None,
                    headers: vec![],
                },
                delivery_count: 1,
            },
            AcknowledgeType::Accept,
        )
        .unwrap_err();
    assert!(e.to_string().contains("does not hold"), "{e}");
    c.close().await.unwrap();

    // The group has nothing left to give.
    let mut late = share_consumer(&b, &group, &[]).await;
    subscribe(&mut late, &[&topic]).await.unwrap();
    let got = poll_until(&mut late, Duration::from_secs(8), |_, r| !r.is_empty()).await;
    assert!(!got, "accepted records are never delivered again");
    late.close().await.unwrap();
}

async fn uuid_of(admin: &kafka_wire::Client, topic: &str) -> uuid::Uuid {
    let md = admin
        .refresh_metadata(Some(&[topic.to_string()]))
        .await
        .unwrap();
    uuid::Uuid::from_bytes(md.topics[topic].id)
}

#[tokio::test]
async fn a_released_record_comes_back_with_delivery_count_2() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "share-release", 1, 5, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-release").await;
    let mut c = share_consumer(&b, &group, &[("share.acknowledgement.mode", "explicit")]).await;
    if subscribe(&mut c, &[&topic]).await.is_none() {
        return;
    }
    let mut released = BTreeSet::new();
    let got = poll_until(&mut c, WAIT, |c, records| {
        for r in records {
            assert_eq!(r.delivery_count, 1);
            c.acknowledge(r, AcknowledgeType::Release).unwrap();
            released.insert(r.offset());
        }
        !records.is_empty()
    })
    .await;
    assert!(got, "no records within {WAIT:?}");
    let outcomes = c.commit_sync(Duration::from_secs(10)).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| o.error.is_none() && o.ack == AcknowledgeType::Release),
        "{outcomes:?}"
    );

    let mut redelivered = BTreeMap::new();
    let got = poll_until(&mut c, WAIT, |c, records| {
        for r in records {
            c.acknowledge(r, AcknowledgeType::Accept).unwrap();
            redelivered.insert(r.offset(), r.delivery_count);
        }
        released.iter().all(|o| redelivered.contains_key(o))
    })
    .await;
    assert!(got, "released {released:?}, back {redelivered:?}");
    for o in &released {
        assert_eq!(redelivered[o], 2, "offset {o}: delivered twice");
    }
    let outcomes = c.commit_sync(Duration::from_secs(10)).await.unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    c.close().await.unwrap();
}

#[tokio::test]
async fn two_share_consumers_of_one_partition_both_get_records() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let n = 300;
    let topic = testkit::numbered_topic(&b, &admin, "share-two", 1, n, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-two").await;
    // record_limit (KIP-1206): each ShareFetch acquires at most 5 records,
    // so neither member can take the whole partition in one go.
    let props = [
        ("max.poll.records", "5"),
        ("share.acquire.mode", "record_limit"),
    ];
    let mut a = share_consumer(&b, &group, &props).await;
    let mut c = share_consumer(&b, &group, &props).await;
    if subscribe(&mut a, &[&topic]).await.is_none() {
        return;
    }
    subscribe(&mut c, &[&topic]).await.unwrap();

    let seen: Arc<Mutex<Vec<(usize, i64)>>> = Arc::default();
    let run = |mut consumer: consumer_core::share::ShareConsumer, who: usize| {
        let seen = seen.clone();
        tokio::spawn(async move {
            let end = Instant::now() + WAIT;
            while Instant::now() < end && seen.lock().unwrap().len() < n as usize {
                let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
                assert!(records.len() <= 5, "max.poll.records: {}", records.len());
                seen.lock()
                    .unwrap()
                    .extend(records.iter().map(|r| (who, r.offset())));
                // Some work, so the other member gets its turns.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            consumer.close().await.unwrap();
        })
    };
    let (x, y) = (run(a, 0), run(c, 1));
    x.await.unwrap();
    y.await.unwrap();

    let seen = seen.lock().unwrap();
    let per: Vec<usize> = (0..2)
        .map(|w| seen.iter().filter(|(who, _)| *who == w).count())
        .collect();
    assert!(
        per[0] > 0 && per[1] > 0,
        "both members got records: {per:?}"
    );
    let offsets: BTreeSet<i64> = seen.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets.len(), n as usize, "every record delivered: {per:?}");
    assert_eq!(
        seen.len(),
        n as usize,
        "none twice (accepted at the next poll)"
    );
}

#[tokio::test]
async fn renew_restarts_a_records_acquisition_lock() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "share-renew", 1, 1, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-renew").await;
    let mut c = share_consumer(&b, &group, &[("share.acknowledgement.mode", "explicit")]).await;
    if subscribe(&mut c, &[&topic]).await.is_none() {
        return;
    }
    let mut held = None;
    let got = poll_until(&mut c, WAIT, |_, records| {
        held = records.first().cloned();
        held.is_some()
    })
    .await;
    assert!(got);
    let record = held.unwrap();
    let lock = c
        .acquisition_lock_timeout()
        .expect("the broker announced its lock");
    let before = c.lock_deadline(&record).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.acknowledge(&record, AcknowledgeType::Renew).unwrap();
    let outcomes = c.commit_sync(Duration::from_secs(10)).await.unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].ack, AcknowledgeType::Renew);
    assert!(outcomes[0].error.is_none(), "{outcomes:?}");
    let after = c
        .lock_deadline(&record)
        .expect("still with the application");
    assert!(
        after >= before + Duration::from_secs(1),
        "lock {lock:?}: {before:?} -> {after:?}"
    );
    // Still ours: not delivered again, and accepted in the end.
    assert!(c.poll(Duration::from_millis(500)).await.unwrap().is_empty());
    c.acknowledge(&record, AcknowledgeType::Accept).unwrap();
    let outcomes = c.commit_sync(Duration::from_secs(10)).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| o.error.is_none() && o.ack == AcknowledgeType::Accept),
        "{outcomes:?}"
    );
    c.close().await.unwrap();
}

/// A partition the group moves to a newcomer is handed over first: the
/// acknowledgements the old member held for it go out (and are answered)
/// before the heartbeat that ends its reconciliation, without a poll or a
/// commit of the old member.
#[tokio::test]
async fn a_revoked_partitions_held_acknowledgements_are_sent_at_once() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "share-revoke", 2, 40, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-revoke").await;
    let explicit = [("share.acknowledgement.mode", "explicit")];
    let mut a = share_consumer(&b, &group, &explicit).await;
    if subscribe(&mut a, &[&topic]).await.is_none() {
        return;
    }
    assert!(testkit::eventually(WAIT, || a.assignment().len() == 2).await);
    // Hold records of both partitions: each poll's are RENEWed (answered,
    // they no longer block the next poll), then all accepted at the end.
    let mut held: Vec<consumer_core::share::ShareRecord> = Vec::new();
    let both = |held: &[consumer_core::share::ShareRecord]| {
        held.iter()
            .map(|r| r.tp.partition)
            .collect::<BTreeSet<_>>()
            .len()
            == 2
    };
    let end = Instant::now() + WAIT;
    while !both(&held) && Instant::now() < end {
        let records = a.poll(Duration::from_millis(500)).await.unwrap();
        for r in &records {
            a.acknowledge(r, AcknowledgeType::Renew).unwrap();
        }
        for o in a.commit_sync(Duration::from_secs(10)).await.unwrap() {
            assert!(o.error.is_none(), "{o:?}");
        }
        held.extend(records);
    }
    assert!(both(&held), "records of both partitions held");
    for r in &held {
        a.acknowledge(r, AcknowledgeType::Accept).unwrap();
    }
    // Held until a's next poll or commit, which never come: only the
    // hand-over of a revoked partition sends them.
    let mut c = share_consumer(&b, &group, &explicit).await;
    subscribe(&mut c, &[&topic]).await.unwrap();
    assert!(
        testkit::eventually(WAIT, || a.assignment().len() < 2).await,
        "the group gave the newcomer a partition of a's"
    );
    let kept = a.assignment();
    let revoked: BTreeSet<i64> = held
        .iter()
        .filter(|r| !kept.contains(&r.tp))
        .map(|r| r.offset())
        .collect();
    assert!(!revoked.is_empty(), "a held partition was revoked");
    let mut sent: BTreeSet<i64> = BTreeSet::new();
    testkit::eventually(Duration::from_secs(10), || {
        for o in a.take_ack_outcomes() {
            assert!(o.error.is_none(), "{o:?}");
            if !kept.contains(&o.tp) {
                sent.extend(o.offsets);
            }
        }
        sent == revoked
    })
    .await;
    assert_eq!(
        sent, revoked,
        "the revoked partition's acknowledgements went"
    );
    // The newcomer never gets them again.
    let mut again = Vec::new();
    poll_until(&mut c, Duration::from_secs(3), |c, records| {
        for r in records {
            if !kept.contains(&r.tp) && revoked.contains(&r.offset()) {
                again.push(r.offset());
            }
            c.acknowledge(r, AcknowledgeType::Accept).unwrap();
        }
        false
    })
    .await;
    assert!(again.is_empty(), "accepted, yet delivered again: {again:?}");
    c.close().await.unwrap();
    a.close().await.unwrap();
}
