//! A member that dies, or stops polling, while it holds records: the
//! records come back to the group and are handled by another member.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use consumer_core::share::{AcknowledgeType, ShareRecord};

use super::{poll_until, share_consumer, share_group, share_group_with, subscribe, SHORTEST_LOCK};

const WAIT: Duration = Duration::from_secs(60);

/// Where [`holder_child`] finds its broker, group and topic:
/// `bootstrap group topic`.
const CHILD_ENV: &str = "SHARE_HOLDER_CHILD";

/// The child process of [`holder_stopped_by`] (this test binary started
/// again on this test alone): a share member
/// that polls until it holds records, prints `HELD <offsets>`, and waits
/// to be killed without acknowledging them. Does nothing without
/// [`CHILD_ENV`].
#[tokio::test]
#[ignore = "a child process of another test"]
async fn holder_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [bootstrap, group, topic]: [&str; 3] = spec
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("bootstrap group topic");
    let b = testkit::BrokerEnv::plaintext(bootstrap);
    let mut c = share_consumer(&b, group, &[("share.acknowledgement.mode", "explicit")]).await;
    c.subscribe(&[topic]).await.expect("subscribe");
    let records = loop {
        let records = c.poll(Duration::from_millis(500)).await.expect("poll");
        if !records.is_empty() {
            break records;
        }
    };
    let offsets: Vec<String> = records.iter().map(|r| r.offset().to_string()).collect();
    println!("HELD {}", offsets.join(","));
    std::io::stdout().flush().expect("flush");
    std::future::pending::<()>().await;
}

/// `kill -9` a member holding records (no acknowledgement, no share
/// session close, no leave): they go to another member with delivery
/// count 2, and are accepted there. The broker does not wait for their
/// lock: the killed process's connections close with it, and Kafka 4.4
/// releases what the share sessions of a closed connection acquired.
#[tokio::test]
async fn a_member_killed_holding_records_has_them_redelivered() {
    let Some((held, waited, lock)) = holder_stopped_by("-9").await else {
        return;
    };
    assert!(
        waited < lock,
        "held {held:?}: back after {waited:?}, before the {lock:?} lock (a closed connection \
         releases them)"
    );
}

/// A member frozen while holding records (`kill -STOP`: its connections
/// stay open, nothing is acknowledged): its records go to another member
/// with delivery count 2 once their acquisition lock (the group's
/// `share.record.lock.duration.ms`) runs out, and are accepted there.
#[tokio::test]
async fn a_frozen_member_holding_records_has_them_redelivered_after_the_lock() {
    let Some((held, waited, lock)) = holder_stopped_by("-STOP").await else {
        return;
    };
    assert!(
        waited + Duration::from_secs(3) >= lock,
        "held {held:?}: back after {waited:?}, only once the {lock:?} lock ran out"
    );
}

/// A holder ([`holder_child`]) stopped by `kill <signal>` once it holds
/// records (then killed); a survivor that joined first polls until every
/// held record is back with delivery count 2, and accepts them. Returns
/// the held offsets, how long after the signal the first came back, and
/// the group's lock; `None` without share groups.
async fn holder_stopped_by(signal: &str) -> Option<(Vec<i64>, Duration, Duration)> {
    let b = testkit::broker()?;
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "share-kill", 1, 10, |i| format!("k{i}")).await;
    let lock = SHORTEST_LOCK;
    let lock_ms = lock.as_millis().to_string();
    let group = share_group_with(
        &admin,
        "share-kill",
        &[("share.record.lock.duration.ms", &lock_ms)],
    )
    .await;
    // The survivor joins first (it fetches only when it polls, later).
    let mut survivor =
        share_consumer(&b, &group, &[("share.acknowledgement.mode", "explicit")]).await;
    subscribe(&mut survivor, &[&topic]).await?;

    let exe = std::env::current_exe().expect("this test binary");
    let child = testkit::DrainedChild::spawn(
        Command::new(exe)
            .args([
                "share::crash::holder_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, format!("{} {group} {topic}", b.bootstrap)),
    )
    .expect("spawn the holder");
    let held_line = || {
        child
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("HELD ").map(str::to_string))
    };
    assert!(
        testkit::eventually(WAIT, || held_line().is_some()).await,
        "the holder got no records: {}{}",
        child.stdout(),
        child.stderr()
    );
    let held: Vec<i64> = held_line()
        .unwrap()
        .split(',')
        .map(|o| o.parse().unwrap())
        .collect();
    let kill = |signal: &str| {
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    };
    kill(signal);
    let stopped_at = Instant::now();

    let mut redelivered: BTreeMap<i64, u16> = BTreeMap::new();
    let mut first_back = None;
    let got = poll_until(&mut survivor, lock + WAIT, |c, records| {
        for r in records {
            first_back.get_or_insert_with(Instant::now);
            redelivered.insert(r.offset(), r.delivery_count);
            c.acknowledge(r, AcknowledgeType::Accept).unwrap();
        }
        held.iter().all(|o| redelivered.contains_key(o))
    })
    .await;
    if signal != "-9" {
        kill("-9");
    }
    let out = child.wait().expect("the holder exits");
    assert!(!out.success(), "killed: {}", out.all());
    assert!(got, "held {held:?}, back {redelivered:?}");
    for o in &held {
        assert_eq!(redelivered[o], 2, "offset {o}: its second delivery");
    }
    let outcomes = survivor.commit_sync(Duration::from_secs(10)).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| o.error.is_none() && o.ack == AcknowledgeType::Accept),
        "{outcomes:?}"
    );
    survivor.close().await.unwrap();
    let waited = first_back.unwrap().duration_since(stopped_at);
    Some((held, waited, lock))
}

/// A member whose application stops polling for longer than
/// `max.poll.interval.ms` leaves the group and gives back what it holds:
/// another member gets those records with delivery count 2 long before
/// their lock (30 s) would have run out, and the stalled application's
/// late acknowledgement is refused, saying why.
#[tokio::test]
async fn a_member_that_stops_polling_gives_its_records_back() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "share-stall", 1, 5, |i| format!("k{i}")).await;
    let group = share_group(&admin, "share-stall").await;
    let explicit = ("share.acknowledgement.mode", "explicit");
    let mut stalled =
        share_consumer(&b, &group, &[explicit, ("max.poll.interval.ms", "2000")]).await;
    if subscribe(&mut stalled, &[&topic]).await.is_none() {
        return;
    }
    let mut held: Vec<ShareRecord> = Vec::new();
    assert!(
        poll_until(&mut stalled, WAIT, |_, r| {
            held.extend_from_slice(r);
            !held.is_empty()
        })
        .await
    );
    let stalled_at = Instant::now();
    let mut other = share_consumer(&b, &group, &[explicit]).await;
    subscribe(&mut other, &[&topic]).await.unwrap();
    let mut back: BTreeMap<i64, u16> = BTreeMap::new();
    let got = poll_until(&mut other, Duration::from_secs(20), |c, records| {
        for r in records {
            back.insert(r.offset(), r.delivery_count);
            c.acknowledge(r, AcknowledgeType::Accept).unwrap();
        }
        held.iter().all(|r| back.contains_key(&r.offset()))
    })
    .await;
    assert!(
        got,
        "held {:?}, back {back:?}",
        held.iter().map(ShareRecord::offset).collect::<Vec<_>>()
    );
    assert!(
        stalled_at.elapsed() < Duration::from_secs(25),
        "before the 30 s lock"
    );
    for r in &held {
        assert_eq!(back[&r.offset()], 2, "offset {}", r.offset());
    }
    let outcomes = other.commit_sync(Duration::from_secs(10)).await.unwrap();
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    let late = stalled
        .acknowledge(&held[0], AcknowledgeType::Accept)
        .unwrap_err();
    let text = late.to_string();
    assert!(
        text.contains("left the group") || text.contains("gave it back"),
        "{text}"
    );
    other.close().await.unwrap();
    stalled.close().await.unwrap();
}
