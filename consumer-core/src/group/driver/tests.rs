//! Two members driven through a rebalance by the real driver, each with a
//! consumer that acknowledges every listener (at once, or after a while)
//! and polls every second, against the scripted coordinator
//! (`io/fake.rs`): no broker, tokio's clock paused (timers fire as soon
//! as every task waits). Classic, KIP-848 and share members alike.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{now, Driver, Ended, Seam};
use crate::config::{ConsumerConfig, GroupProtocol};
use crate::group::io::fake::{FakeCoordinator, TOPIC};
use crate::group::share_protocol::member::ShareMemberConfig;
use crate::group::subscription::TopicSubscription;
use crate::group::{classic, consumer_protocol, share_protocol, GroupEvent, GroupSnapshot};
use crate::tp::TopicPartition;

/// One member under test: its driver's task and its consumer's.
struct Member {
    snapshot: Arc<Mutex<GroupSnapshot>>,
    /// Held here too: a consumer whose check panicked must not close it
    /// (the member would leave, and the test wait for nothing).
    _polled: Arc<watch::Sender<std::time::Instant>>,
    close: watch::Sender<bool>,
    driver: JoinHandle<Ended>,
    consumer: JoinHandle<()>,
}

impl Member {
    fn snap(&self) -> GroupSnapshot {
        self.snapshot.lock().expect("snapshot lock").clone()
    }

    /// Close, and wait for the driver and the consumer to end.
    async fn close(self) -> Ended {
        self.close.send(true).expect("the driver is running");
        let ended = self.driver.await.expect("the driver does not panic");
        self.consumer.await.expect("the consumer's checks held");
        ended
    }
}

fn config(protocol: &str, assignor: Option<&str>) -> Arc<ConsumerConfig> {
    let mut b = ConsumerConfig::builder()
        .set("bootstrap.servers", "localhost:9092")
        .and_then(|b| b.set("group.id", "g"))
        .and_then(|b| b.set("group.protocol", protocol))
        .expect("valid settings");
    if let Some(a) = assignor {
        b = b
            .set("partition.assignment.strategy", a)
            .expect("an assignor");
    }
    Arc::new(b.build().expect("a valid config"))
}

/// Start member `name` of group `g` on [`TOPIC`] under `cfg.group_protocol`.
fn start(name: &'static str, fake: &FakeCoordinator, cfg: &Arc<ConsumerConfig>) -> Member {
    let cfg = cfg.clone();
    let sub = TopicSubscription::Topics(vec![TOPIC.into()]);
    spawn_member(name, fake, Duration::ZERO, move |io, seam| async move {
        let mut driver = Driver::new(io, "g".into(), true, seam);
        match cfg.group_protocol {
            GroupProtocol::Classic => {
                let mut m = classic::member(&cfg, "g", sub, now());
                driver.run(&mut classic::Classic::new(&cfg), &mut m).await
            }
            _ => {
                let mut m = consumer_protocol::member(&cfg, "g", sub, false, now());
                let mut p = consumer_protocol::ConsumerProtocol::new(&cfg, false);
                driver.run(&mut p, &mut m).await
            }
        }
    })
}

/// Start share member `name` (member id `share-{name}`) of share group
/// `g` on [`TOPIC`]; its consumer takes `handover` to hand revoked
/// partitions over (the fetch path's acknowledgements answered).
fn start_share(name: &'static str, fake: &FakeCoordinator, handover: Duration) -> Member {
    let cfg = ShareMemberConfig {
        group_id: "g".into(),
        member_id: format!("share-{name}"),
        rack_id: None,
        topics: vec![TOPIC.into()],
        max_poll_interval: Duration::from_secs(300),
        handover_timeout: Duration::from_secs(30),
        retry_backoff: crate::group::RETRY_BACKOFF,
        heartbeat_interval: Duration::from_secs(5),
    };
    spawn_member(name, fake, handover, move |io, seam| {
        share_protocol::run(io, cfg, seam)
    })
}

/// Spawn `run` (a driver on the scripted coordinator and a seam) and the
/// consumer of its events.
fn spawn_member<F, Fut>(
    name: &'static str,
    fake: &FakeCoordinator,
    handover: Duration,
    run: F,
) -> Member
where
    F: FnOnce(FakeCoordinator, Seam) -> Fut,
    Fut: Future<Output = Ended> + Send + 'static,
{
    let snapshot = Arc::new(Mutex::new(GroupSnapshot::default()));
    let (events_tx, events) = mpsc::channel(16);
    let (polled_tx, polled) = watch::channel(now());
    let polled_tx = Arc::new(polled_tx);
    let (close, close_rx) = watch::channel(false);
    let seam = Seam {
        snapshot: snapshot.clone(),
        events: events_tx,
        polled,
        close: close_rx,
    };
    let driver = tokio::spawn(run(fake.clone(), seam));
    let consumer = tokio::spawn(consume(
        Consumer {
            name,
            polled: polled_tx.clone(),
            snapshot: snapshot.clone(),
            fake: fake.clone(),
            handover,
        },
        events,
    ));
    Member {
        snapshot,
        _polled: polled_tx,
        close,
        driver,
        consumer,
    }
}

/// One member's consumer.
struct Consumer {
    name: &'static str,
    polled: Arc<watch::Sender<std::time::Instant>>,
    snapshot: Arc<Mutex<GroupSnapshot>>,
    fake: FakeCoordinator,
    /// How long its `on_revoked` takes.
    handover: Duration,
}

/// The consumer: notes every event in the coordinator's log (`A revoked
/// 0,1`, once its `on_revoked` is done), checks what commits may do
/// meanwhile, acknowledges listeners, and polls every second.
async fn consume(c: Consumer, mut events: mpsc::Receiver<GroupEvent>) {
    let Consumer {
        name,
        polled,
        snapshot,
        fake,
        handover,
    } = c;
    let committable = |tp: &TopicPartition| snapshot.lock().expect("lock").may_commit(tp);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => return, // the driver ended
                Some(GroupEvent::Assigned(parts, _)) => {
                    fake.note(format!("{name} assigned {}", show(&parts)));
                }
                Some(GroupEvent::Revoked(parts, done)) => {
                    assert!(parts.iter().all(committable), "{name}: revoked partitions stay committable until the ack");
                    tokio::time::sleep(handover).await;
                    fake.note(format!("{name} revoked {}", show(&parts)));
                    let _ = done.send(());
                }
                Some(GroupEvent::Lost(parts, done)) => {
                    assert!(!parts.iter().any(committable), "{name}: lost partitions are never committed");
                    fake.note(format!("{name} lost {}", show(&parts)));
                    let _ = done.send(());
                }
                Some(GroupEvent::Fatal(msg)) => panic!("{name}: fatal: {msg}"),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let _ = polled.send(now());
            }
        }
    }
}

/// `0,1,3`: the partitions, in order.
fn show<'a>(parts: impl IntoIterator<Item = &'a TopicPartition>) -> String {
    let mut ps: Vec<i32> = parts.into_iter().map(|tp| tp.partition).collect();
    ps.sort_unstable();
    ps.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Wait (virtual time) until `done`, at most two minutes.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 2 min for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stable alone with all 4 partitions; then B joins, and both end
/// stable in one generation with the partitions split between them.
async fn a_then_b(fake: &FakeCoordinator, cfg: &Arc<ConsumerConfig>) -> (Member, Member) {
    let a = start("A", fake, cfg);
    let alone = || a.snap().stable && a.snap().owned.len() == 4;
    wait_until("A owns every partition", alone).await;
    let first = a.snap().generation;
    let b = start("B", fake, cfg);
    wait_until("A and B split the partitions", || split(&a, &b, 4)).await;
    assert!(
        a.snap().generation > first,
        "a new generation or member epoch"
    );
    (a, b)
}

/// Both stable in one generation, the partitions split between them.
fn split(a: &Member, b: &Member, partitions: usize) -> bool {
    let (a, b) = (a.snap(), b.snap());
    a.stable
        && b.stable
        && a.generation == b.generation
        && a.owned.len() + b.owned.len() == partitions
        && a.owned.is_disjoint(&b.owned)
        && !a.owned.is_empty()
        && !b.owned.is_empty()
}

/// Where the first log line starting with `prefix` is, after `from`.
fn find(log: &[String], prefix: &str, from: usize) -> usize {
    log.iter()
        .skip(from)
        .position(|l| l.starts_with(prefix))
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no {prefix:?} after line {from} in {log:#?}"))
}

/// Classic, eager (range): the member that owned everything gives it all
/// back, and its listener is acknowledged, before it joins the next
/// generation; a member that closes revokes before it leaves, and the
/// other takes its partitions back.
#[tokio::test(start_paused = true)]
async fn two_classic_members_rebalance_eagerly() {
    let fake = FakeCoordinator::new(4);
    let (a, b) = a_then_b(&fake, &config("classic", Some("range"))).await;
    let (sa, sb) = (a.snap(), b.snap());
    assert_eq!(sa.generation, 2);
    assert_eq!(sa.protocol, Some(GroupProtocol::Classic));

    let log = fake.log();
    let a_join = format!("JoinGroup {}", sa.member_id);
    let rejoin = find(&log, &a_join, find(&log, &a_join, 0) + 1);
    let revoked = find(&log, "A revoked 0,1,2,3", 0);
    assert!(
        revoked < rejoin,
        "eager: revoked and acknowledged before rejoining: {log:#?}"
    );
    let reassigned = find(&log, &format!("A assigned {}", show(&sa.owned)), rejoin);
    let b_assigned = find(&log, &format!("B assigned {}", show(&sb.owned)), 0);
    assert!(b_assigned > revoked && reassigned > revoked);
    assert!(
        !log.iter().any(|l| l.contains(" lost ")),
        "nothing lost: {log:#?}"
    );

    let b_owned = show(&sb.owned);
    let at = fake.log().len();
    assert_eq!(b.close().await, Ended::Left);
    let log = fake.log();
    let revoked = find(&log, &format!("B revoked {b_owned}"), at);
    let left = find(&log, &format!("LeaveGroup {}", sb.member_id), at);
    assert!(
        revoked < left,
        "revoke (commits valid) before the leave: {log:#?}"
    );
    wait_until("A owns every partition again", || {
        a.snap().stable && a.snap().owned.len() == 4
    })
    .await;
    assert_eq!(a.snap().generation, 3);
    assert_eq!(a.close().await, Ended::Left);
}

/// Classic, cooperative (KIP-429): the owner keeps what stays, revokes
/// only what moves, and the newcomer gets those in the second rebalance,
/// after the revoke was acknowledged.
#[tokio::test(start_paused = true)]
async fn two_classic_members_rebalance_cooperatively() {
    let fake = FakeCoordinator::new(4);
    let (a, b) = a_then_b(&fake, &config("classic", Some("cooperative-sticky"))).await;
    let (sa, sb) = (a.snap(), b.snap());
    assert_eq!(sa.generation, 3, "two rebalances: revoke, then assign");
    let log = fake.log();
    let moved = show(&sb.owned);
    let revoked = find(&log, &format!("A revoked {moved}"), 0);
    let assigned = find(&log, &format!("B assigned {moved}"), 0);
    assert!(revoked < assigned, "moved only once released: {log:#?}");
    let a_events: Vec<&String> = log.iter().filter(|l| l.starts_with("A ")).collect();
    assert_eq!(
        a_events,
        ["A assigned 0,1,2,3", &format!("A revoked {moved}")],
        "A kept {} throughout",
        show(&sa.owned)
    );
    assert_eq!(b.close().await, Ended::Left);
    assert_eq!(a.close().await, Ended::Left);
}

/// KIP-848: the broker assigns; the owner revokes what moves and
/// acknowledges in its next heartbeat, and only then is the newcomer
/// assigned those partitions. Closing revokes, then leaves with epoch -1.
#[tokio::test(start_paused = true)]
async fn two_kip848_members_rebalance() {
    let fake = FakeCoordinator::new(4);
    let (a, b) = a_then_b(&fake, &config("consumer", None)).await;
    let (sa, sb) = (a.snap(), b.snap());
    assert_eq!(sa.protocol, Some(GroupProtocol::Consumer));
    assert!(sa.generation > 0, "the member epoch is what commits carry");
    let log = fake.log();
    let moved = show(&sb.owned);
    let revoked = find(&log, &format!("A revoked {moved}"), 0);
    let assigned = find(&log, &format!("B assigned {moved}"), 0);
    assert!(revoked < assigned, "{log:#?}");
    // A's ack (the heartbeat after the revoke) is what releases them.
    let ack = find(
        &log,
        &format!("ConsumerGroupHeartbeat {}", sa.member_id),
        revoked,
    );
    assert!(ack < assigned, "{log:#?}");

    let at = fake.log().len();
    assert_eq!(a.close().await, Ended::Left);
    let log = fake.log();
    let revoked = find(&log, &format!("A revoked {}", show(&sa.owned)), at);
    let leave = find(
        &log,
        &format!("ConsumerGroupHeartbeat {} epoch -1", sa.member_id),
        at,
    );
    assert!(revoked < leave, "{log:#?}");
    wait_until("B owns every partition", || b.snap().owned.len() == 4).await;
    assert_eq!(b.close().await, Ended::Left);
    let owners: BTreeSet<String> = fake
        .log()
        .iter()
        .filter(|l| l.contains(" lost "))
        .cloned()
        .collect();
    assert!(owners.is_empty(), "nothing lost: {owners:?}");
}

/// KIP-932: the broker assigns at once (nothing waits for a release). The
/// member that gives partitions up hands them over (its consumer takes 2 s
/// to answer what it owed them) before the heartbeat that ends its
/// reconciliation; closing hands over, then leaves with epoch -1.
#[tokio::test(start_paused = true)]
async fn two_share_members_split_the_partitions() {
    let fake = FakeCoordinator::new(4);
    let handover = Duration::from_secs(2);
    let a = start_share("A", &fake, handover);
    wait_until("A owns every partition", || {
        a.snap().stable && a.snap().owned.len() == 4
    })
    .await;
    let b = start_share("B", &fake, handover);
    wait_until("A and B split the partitions", || split(&a, &b, 4)).await;
    let (sa, sb) = (a.snap(), b.snap());
    assert_eq!(
        (sa.member_id.as_str(), sb.member_id.as_str()),
        ("share-A", "share-B")
    );
    assert_eq!(sa.protocol, None, "a share group has no commit protocol");
    let moved = show(&sb.owned);
    let handed_over = format!("A revoked {moved}");
    // B fetches at once; A's reconciliation ends with a heartbeat once its
    // consumer handed the partitions over.
    wait_until("A's hand-over and the heartbeat after it", || {
        let log = fake.log();
        log.iter().position(|l| *l == handed_over).is_some_and(|i| {
            log[i..]
                .iter()
                .any(|l| l.starts_with("ShareGroupHeartbeat share-A"))
        })
    })
    .await;
    let log = fake.log();
    let handed_over = find(&log, &handed_over, 0);
    assert!(
        find(&log, "B assigned", 0) < handed_over,
        "the broker does not wait for a share member's revoke: {log:#?}"
    );
    assert!(
        !log[handed_over..]
            .iter()
            .any(|l| l.starts_with("A assigned")),
        "A kept {}: {log:#?}",
        show(&sa.owned)
    );

    let at = fake.log().len();
    assert_eq!(a.close().await, Ended::Left);
    let log = fake.log();
    let revoked = find(&log, &format!("A revoked {}", show(&sa.owned)), at);
    let leave = find(&log, "ShareGroupHeartbeat share-A epoch -1", at);
    assert!(revoked < leave, "hand over, then leave: {log:#?}");
    wait_until("B owns every partition", || b.snap().owned.len() == 4).await;
    assert_eq!(b.close().await, Ended::Left);
    assert!(
        !fake.log().iter().any(|l| l.contains(" lost ")),
        "nothing lost: {:#?}",
        fake.log()
    );
}

/// A consumer dropped without closing (its `polled` sender gone): the
/// member leaves as on close, instead of spinning on the closed channel.
/// Real time: a spinning driver never lets tokio's paused clock move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_consumer_is_gone_leaves() {
    let fake = FakeCoordinator::new(2);
    let cfg = config("consumer", None);
    let (events_tx, mut events) = mpsc::channel(16);
    let (polled_tx, polled) = watch::channel(now());
    let (close_tx, close) = watch::channel(false);
    let seam = Seam {
        snapshot: Arc::new(Mutex::new(GroupSnapshot::default())),
        events: events_tx,
        polled,
        close,
    };
    let mut driver = Driver::new(fake.clone(), "g".into(), true, seam);
    let task = tokio::spawn(async move {
        let sub = TopicSubscription::Topics(vec![TOPIC.into()]);
        let mut m = consumer_protocol::member(&cfg, "g", sub, false, now());
        let mut p = consumer_protocol::ConsumerProtocol::new(&cfg, false);
        driver.run(&mut p, &mut m).await
    });
    match events.recv().await {
        Some(GroupEvent::Assigned(parts, _)) => assert_eq!(parts.len(), 2),
        other => panic!("expected the assignment, got {other:?}"),
    }
    drop(polled_tx);
    drop(events);
    let ended = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the driver ends instead of spinning on the closed channel")
        .expect("the driver does not panic");
    assert_eq!(ended, Ended::Left);
    assert!(
        fake.log().iter().any(|l| l.ends_with("epoch -1")),
        "left the group: {:#?}",
        fake.log()
    );
    drop(close_tx);
}
