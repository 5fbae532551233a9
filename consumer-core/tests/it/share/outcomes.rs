//! Every record is handled once, whatever its deliveries' outcomes:
//! ACCEPT (done), RELEASE (delivered again), REJECT (never again), or held
//! by a member that closes without acknowledging it (its share session's
//! close releases it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use consumer_core::share::{AcknowledgeType, ShareRecord};

use super::{poll_until, share_consumer, share_group, subscribe};

const WAIT: Duration = Duration::from_secs(60);
const N: u32 = 40;

/// The record's value: its number.
fn number(r: &ShareRecord) -> u32 {
    let v = r.record.value.as_deref().expect("a value");
    std::str::from_utf8(v).unwrap().parse().unwrap()
}

/// What the first member does with record `i`: `None` keeps it
/// unacknowledged until its close.
fn first_outcome(i: u32) -> Option<AcknowledgeType> {
    match i % 4 {
        0 => Some(AcknowledgeType::Accept),
        1 => Some(AcknowledgeType::Release),
        2 => Some(AcknowledgeType::Reject),
        _ => None,
    }
}

#[tokio::test]
async fn every_record_is_acknowledged_once_under_every_outcome() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic =
        testkit::numbered_topic(&b, &admin, "share-outcomes", 2, N, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-outcomes").await;
    let explicit = [("share.acknowledgement.mode", "explicit")];

    // The first member: one poll's records, each given its outcome.
    let mut first = share_consumer(&b, &group, &explicit).await;
    if subscribe(&mut first, &[&topic]).await.is_none() {
        return;
    }
    let mut seen: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    let mut kept: BTreeSet<u32> = BTreeSet::new();
    let got = poll_until(&mut first, WAIT, |c, records| {
        for r in records {
            let i = number(r);
            seen.entry(i).or_default().push(r.delivery_count);
            match first_outcome(i) {
                Some(ack) => c.acknowledge(r, ack).unwrap(),
                None => {
                    kept.insert(i);
                }
            }
        }
        !records.is_empty()
    })
    .await;
    assert!(got, "no records within {WAIT:?}");
    // Done: what the broker confirmed as accepted or rejected.
    let mut done: BTreeMap<u32, AcknowledgeType> = BTreeMap::new();
    let mut released: BTreeSet<u32> = BTreeSet::new();
    let first_saw: BTreeSet<u32> = seen.keys().copied().collect();
    let by_offset = numbers_by_offset(&b, &topic).await;
    for o in first.commit_sync(Duration::from_secs(10)).await.unwrap() {
        assert!(o.error.is_none(), "{o:?}");
        for off in &o.offsets {
            let i = by_offset[&(o.tp.partition, *off)];
            match o.ack {
                AcknowledgeType::Release => assert!(released.insert(i)),
                ack => assert!(done.insert(i, ack).is_none(), "record {i} settled twice"),
            }
        }
    }
    first.close().await.unwrap();

    // The second member accepts whatever comes: the released and kept
    // ones again (delivery count 2), the ones the first never saw.
    let mut second = share_consumer(&b, &group, &explicit).await;
    subscribe(&mut second, &[&topic]).await.unwrap();
    let end = Instant::now() + WAIT;
    while done.len() < N as usize && Instant::now() < end {
        for r in second.poll(Duration::from_millis(500)).await.unwrap() {
            let i = number(&r);
            let again = released.contains(&i) || kept.contains(&i);
            assert_eq!(
                r.delivery_count,
                if again { 2 } else { 1 },
                "record {i}: released {released:?}, kept {kept:?}"
            );
            assert!(
                !done.contains_key(&i),
                "record {i} delivered after it was settled"
            );
            seen.entry(i).or_default().push(r.delivery_count);
            second.acknowledge(&r, AcknowledgeType::Accept).unwrap();
        }
        for o in second.commit_sync(Duration::from_secs(10)).await.unwrap() {
            assert!(o.error.is_none(), "{o:?}");
            for off in &o.offsets {
                let i = by_offset[&(o.tp.partition, *off)];
                assert!(done.insert(i, o.ack).is_none(), "record {i} settled twice");
            }
        }
    }
    assert_eq!(done.len(), N as usize, "settled: {done:?}");
    for (i, ack) in &done {
        // The first member's accept or reject stands; everything else the
        // second accepted.
        let expected = match first_outcome(*i) {
            Some(AcknowledgeType::Reject) if first_saw.contains(i) => AcknowledgeType::Reject,
            _ => AcknowledgeType::Accept,
        };
        assert_eq!(*ack, expected, "record {i}");
        let again = released.contains(i) || kept.contains(i);
        let counts: &[u16] = if again { &[1, 2] } else { &[1] };
        assert_eq!(seen[i], counts, "record {i}'s deliveries");
    }
    assert!(
        !kept.is_empty() || !released.is_empty(),
        "the first poll exercised a redelivery"
    );
    let more = poll_until(&mut second, Duration::from_secs(3), |_, r| !r.is_empty()).await;
    assert!(!more, "nothing is left to deliver");
    second.close().await.unwrap();
}

/// (partition, offset) → the number the record carries.
async fn numbers_by_offset(b: &testkit::BrokerEnv, topic: &str) -> BTreeMap<(i32, i64), u32> {
    let mut c = consumer_core::Consumer::connect(
        consumer_core::ConsumerConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let parts: Vec<consumer_core::TopicPartition> = (0..2)
        .map(|p| consumer_core::TopicPartition::new(topic, p))
        .collect();
    c.assign(&parts);
    for tp in &parts {
        c.seek(tp, 0);
    }
    let mut out = BTreeMap::new();
    let end = Instant::now() + WAIT;
    while out.len() < N as usize && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(500)).await.unwrap() {
            for r in &batch.records {
                let v = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap();
                out.insert((batch.tp.partition, r.offset), v.parse().unwrap());
            }
        }
    }
    c.close(Duration::from_secs(5)).await;
    out
}
