//! The consumer against the real broker.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerError, IsolationLevel, OffsetReset, TopicPartition};
use kafka_wire::{Producer, ProducerRecord};

/// Poll until `n` records arrived or `limit` passed.
async fn consume(
    c: &mut Consumer,
    n: usize,
    limit: Duration,
) -> Vec<(TopicPartition, i64, String)> {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(200)).await.unwrap() {
            for r in batch.records {
                out.push((
                    batch.tp.clone(),
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn assign_mode_reads_everything_in_order_and_seek_pause_resume_work() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "consume-assign", 3).await;
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 1_000, |i| format!("k{i}")),
    )
    .await;

    let mut c = common::connect(&b, None, &[]).await;
    let parts: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
    c.assign(&parts);
    let got = consume(&mut c, 1_000, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1_000);
    let mut last: BTreeMap<&TopicPartition, i64> = BTreeMap::new();
    for (tp, off, _) in &got {
        if let Some(prev) = last.insert(tp, *off) {
            assert_eq!(*off, prev + 1, "{tp}: offsets are dense and in order");
        }
    }
    assert_eq!(c.lag(&parts[0]), Some(0));

    // seek back on partition 0 and read it again
    c.seek(&parts[0], 0);
    let n0 = got.iter().filter(|(tp, _, _)| *tp == parts[0]).count();
    let again = consume(&mut c, n0, Duration::from_secs(10)).await;
    assert_eq!(again.len(), n0);
    assert!(again.iter().all(|(tp, _, _)| *tp == parts[0]));

    // pause partition 1: new records there are not returned until resume
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 300, |i| format!("k{i}")),
    )
    .await;
    c.pause(&[parts[1].clone()]);
    let during = consume(&mut c, 300, Duration::from_secs(3)).await;
    assert!(
        during.iter().all(|(tp, _, _)| *tp != parts[1]),
        "paused partition delivered"
    );
    c.resume(&[parts[1].clone()]);
    let after = consume(&mut c, 300 - during.len(), Duration::from_secs(10)).await;
    assert!(after.iter().any(|(tp, _, _)| *tp == parts[1]));
}

#[tokio::test]
async fn offset_reset_policies() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "consume-reset", 1).await;
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 10, |i| format!("k{i}")),
    )
    .await;
    let tp = TopicPartition::new(&topic, 0);

    let mut latest = Consumer::connect(
        common::config(&b, None)
            .auto_offset_reset(OffsetReset::Latest)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    latest.assign(std::slice::from_ref(&tp));
    assert!(latest
        .poll(Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(latest.position(&tp), Some(10));

    let group = testkit::unique_name("reset-none");
    let mut none = Consumer::connect(
        common::config(&b, Some(&group))
            .auto_offset_reset(OffsetReset::None)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    none.assign(std::slice::from_ref(&tp));
    let err = none.poll(Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, ConsumerError::NoOffset { .. }), "{err}");
    assert!(
        err.to_string().contains(&tp.to_string()),
        "names the partition: {err}"
    );

    // with a committed offset, `none` starts there
    none.commit(&[(tp.clone(), 7)]).await.unwrap();
    let got = consume(&mut none, 3, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), [7, 8, 9]);
}

#[tokio::test]
async fn three_members_split_twelve_partitions_and_read_everything() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "consume-group", 12).await;
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 3_000, |i| format!("k{i}")),
    )
    .await;
    let group = testkit::unique_name("group3");

    let mut members = Vec::new();
    for _ in 0..3 {
        let mut c = common::connect(&b, Some(&group), &[]).await;
        c.subscribe(&[&topic]).unwrap();
        members.push(c);
    }
    // Poll all members until the assignment settles and everything is read.
    let mut seen: BTreeSet<(TopicPartition, i64)> = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    let mut settled = false;
    while Instant::now() < end {
        for c in members.iter_mut() {
            for batch in c.poll(Duration::from_millis(100)).await.unwrap() {
                for r in batch.records {
                    seen.insert((batch.tp.clone(), r.offset));
                }
            }
        }
        let sets: Vec<BTreeSet<TopicPartition>> = members
            .iter()
            .map(|c| c.assignment().into_iter().collect())
            .collect();
        let total: usize = sets.iter().map(|s| s.len()).sum();
        let union: BTreeSet<_> = sets.iter().flatten().collect();
        settled = total == 12 && union.len() == 12 && sets.iter().all(|s| s.len() == 4);
        if settled && seen.len() >= 3_000 {
            break;
        }
    }
    assert!(
        settled,
        "assignments: {:?}",
        members.iter().map(|c| c.assignment()).collect::<Vec<_>>()
    );
    assert_eq!(seen.len(), 3_000, "every record consumed");
    for c in members {
        c.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn read_committed_returns_exactly_the_committed_records() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "consume-txn", 1).await;
    let p = Producer::with_client(
        admin.clone(),
        testkit::producer_builder(&b)
            .transactional_id(testkit::unique_name("tx"))
            .build()
            .unwrap(),
    );
    p.init_transactions().await.unwrap();
    for (values, commit) in [
        (&["c0", "c1"][..], true),
        (&["a0", "a1", "a2"][..], false),
        (&["c2"][..], true),
    ] {
        p.begin_transaction().await.unwrap();
        for v in values {
            p.send(
                ProducerRecord::new(&topic)
                    .partition(0)
                    .value(v.to_string()),
            )
            .await
            .unwrap();
        }
        if commit {
            p.commit_transaction().await.unwrap();
        } else {
            p.abort_transaction().await.unwrap();
        }
    }
    let mut c = Consumer::connect(
        common::config(&b, None)
            .isolation_level(IsolationLevel::ReadCommitted)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let tp = TopicPartition::new(&topic, 0);
    c.assign(std::slice::from_ref(&tp));
    let got = consume(&mut c, 3, Duration::from_secs(10)).await;
    let values: Vec<&str> = got.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(values, ["c0", "c1", "c2"]);
    // Nothing more arrives (no markers, no aborted data), and the position is past the last marker.
    assert!(consume(&mut c, 1, Duration::from_millis(800))
        .await
        .is_empty());
    assert_eq!(c.position(&tp), Some(9));
}

#[tokio::test]
async fn stuck_member_leaves_and_its_late_commit_is_refused_locally() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "consume-stuck", 2).await;
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 20, |i| format!("k{i}")),
    )
    .await;
    let group = testkit::unique_name("stuck");
    let mut c = common::connect(&b, Some(&group), &[("max.poll.interval.ms", "2000")]).await;
    c.subscribe(&[&topic]).unwrap();
    let got = consume(&mut c, 20, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 20);
    let tp = TopicPartition::new(&topic, 0);
    c.commit(&[(tp.clone(), 1)])
        .await
        .expect("owned: commit allowed");
    // "Process" for longer than max.poll.interval.ms without polling,
    // until the member has left the group.
    assert!(
        testkit::eventually(Duration::from_secs(15), || c.group_metadata().is_none()).await,
        "the member never left although it stopped polling"
    );
    let err = c.commit(&[(tp.clone(), 5)]).await.unwrap_err();
    assert!(matches!(err, ConsumerError::NotOwned { .. }), "{err}");
    // Nothing moved backwards or forwards.
    assert_eq!(
        c.committed(std::slice::from_ref(&tp))
            .await
            .unwrap()
            .get(&tp),
        Some(&1)
    );
}

#[tokio::test]
async fn auto_commit_commits_what_poll_returned_even_if_it_was_never_processed() {
    // Why auto-commit is off by default: it commits positions, not completions.
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "auto-commit", 1).await;
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 50, |i| format!("k{i}")),
    )
    .await;
    let group = testkit::unique_name("auto");
    let mut c = common::connect(
        &b,
        Some(&group),
        &[
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "100"),
        ],
    )
    .await;
    let tp = TopicPartition::new(&topic, 0);
    c.assign(std::slice::from_ref(&tp));
    let got = consume(&mut c, 50, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 50);
    // The application "crashes" before processing anything; one more poll
    // after the interval is all it takes for the offsets to be committed.
    let c = tokio::sync::Mutex::new(c);
    testkit::eventually_async(Duration::from_secs(10), || async {
        let mut c = c.lock().await;
        c.poll(Duration::from_millis(50)).await.unwrap();
        let committed = c.committed(std::slice::from_ref(&tp)).await.unwrap();
        committed.get(&tp) == Some(&50)
    })
    .await;
    let c = c.into_inner();
    let committed = c.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(
        committed.get(&tp),
        Some(&50),
        "50 records committed, 0 processed: lost on restart"
    );
}

#[tokio::test]
async fn the_consumer_as_a_stream() {
    use std::future::poll_fn;
    use std::pin::Pin;

    use futures_core::Stream;

    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "stream", 2).await;
    testkit::produce(
        &admin,
        &b,
        testkit::numbered_records(&topic, 100, |i| format!("k{i}")),
    )
    .await;
    let mut c = common::connect(&b, None, &[]).await;
    c.assign(&[
        TopicPartition::new(&topic, 0),
        TopicPartition::new(&topic, 1),
    ]);
    let mut stream = c.into_stream(Duration::from_millis(100));
    let mut n = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while n < 100 && Instant::now() < end {
        let item = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        n += item.unwrap().unwrap().records.len();
    }
    assert_eq!(n, 100);
}

#[tokio::test]
async fn commits_never_move_an_offset_backwards() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "no-backwards", 1).await;
    let group = testkit::unique_name("no-backwards");
    let c = common::connect(&b, Some(&group), &[]).await;
    let tp = TopicPartition::new(&topic, 0);
    c.commit(&[(tp.clone(), 10)]).await.unwrap();
    c.commit(&[(tp.clone(), 5)]).await.unwrap(); // a late, stale commit
    let committed = c.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(committed.get(&tp), Some(&10));
}
