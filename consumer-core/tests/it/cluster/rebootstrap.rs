//! Rebootstrap (KIP-899, KIP-1102) on the three-node cluster: issue 31's
//! "every known node replaced by nodes on new ports behind the same
//! bootstrap address; the client recovers without a restart".
//!
//! The clients' only bootstrap address is a forwarder (a stable address in
//! front of the cluster, as a load balancer or a DNS name is), pointed at
//! node 1. While they are idle (`metadata.max.age.ms` of an hour), each
//! node in turn restarts with its broker listeners on new ports (`cargo
//! xtask cluster move`), and the forwarder follows node 1. Afterwards no
//! address the clients learned from metadata answers. With
//! `metadata.recovery.strategy=rebootstrap` (the default) the next refresh
//! goes through the bootstrap address and finds every node where it now
//! is; with `none` the client can only report that its brokers are gone.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::Consumer;
use kafka_wire::{Producer, ProducerConfig, ProducerRecord, TopicPartition};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder on a fixed local port to a target that can change:
/// connections accepted after [`Forwarder::retarget`] go to the new target
/// (the ones already open stay where they are).
struct Forwarder {
    addr: String,
    target: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = Arc::new(Mutex::new(target.to_string()));
        let to = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = to.lock().unwrap().clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { addr, target, task }
    }

    fn retarget(&self, target: &str) {
        *self.target.lock().unwrap() = target.to_string();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An hour: no periodic refresh while the nodes move.
const IDLE: (&str, &str) = ("metadata.max.age.ms", "3600000");

/// How long a recovered client may take to deliver, or read, again.
const BOUND: Duration = Duration::from_secs(20);

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> ProducerConfig {
    let mut b = ProducerConfig::builder()
        .set("bootstrap.servers", bootstrap)
        .unwrap()
        .set(IDLE.0, IDLE.1)
        .unwrap();
    for (k, v) in extra {
        b = b.set(k, v).unwrap();
    }
    b.build().unwrap()
}

fn records(topic: &str, from: u32, n: u32) -> impl Iterator<Item = ProducerRecord> + '_ {
    (from..from + n).map(move |i| {
        ProducerRecord::new(topic)
            .key(format!("k{i}"))
            .value(i.to_string())
    })
}

/// Poll until `want` distinct values were read or `within` passed.
async fn read_until(
    c: &mut Consumer,
    read: &mut BTreeSet<u32>,
    want: usize,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    while read.len() < want && start.elapsed() < within {
        for batch in c.poll(Duration::from_millis(200)).await.unwrap() {
            for r in batch.records {
                let v = std::str::from_utf8(r.value.as_deref().unwrap_or_default()).unwrap();
                read.insert(v.parse().unwrap());
            }
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn clients_whose_every_broker_moved_recover_through_the_bootstrap_address() {
    let started = Instant::now();
    let cluster = testkit::require_cluster!();
    let topic = {
        let admin = testkit::client(&cluster.broker_env()).await;
        testkit::create_topic(&admin, "rebootstrap", 3).await
    };
    let front = Forwarder::start(&cluster.node(1).address).await;
    let via_front = testkit::BrokerEnv::plaintext(front.addr.clone());

    // Every client knows the cluster only through the forwarder.
    let recovering = Producer::connect(producer(&front.addr, &[])).await.unwrap();
    let stuck = Arc::new(
        Producer::connect(producer(
            &front.addr,
            &[
                ("metadata.recovery.strategy", "none"),
                ("delivery.timeout.ms", "3000"),
                ("request.timeout.ms", "1000"),
            ],
        ))
        .await
        .unwrap(),
    );
    let mut consumer = Consumer::connect(common::with(&via_front, None, &[IDLE]).build().unwrap())
        .await
        .unwrap();
    consumer.assign(
        &(0..3)
            .map(|p| TopicPartition::new(&topic, p))
            .collect::<Vec<_>>(),
    );

    for r in records(&topic, 0, 30) {
        recovering.send(r).await.unwrap();
    }
    recovering.flush().await.unwrap();
    stuck
        .send(records(&topic, 30, 1).next().unwrap())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut read = BTreeSet::new();
    read_until(&mut consumer, &mut read, 31, BOUND).await;
    assert_eq!(read.len(), 31, "before the moves");
    let before: Vec<String> = cluster.nodes.iter().map(|n| n.address.clone()).collect();

    // Every node to new ports, one at a time (two of three keep the quorum
    // and min.insync.replicas); the forwarder follows node 1.
    let moves = Instant::now();
    for id in [1, 2, 3] {
        tokio::task::spawn_blocking(move || testkit::move_node(id))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("move node {id}: {e}"));
        if id == 1 {
            let moved = testkit::cluster().expect("the cluster after a move");
            front.retarget(&moved.node(1).address);
        }
    }
    let moves = moves.elapsed();
    let after = testkit::cluster().expect("the cluster after the moves");
    for (node, old) in after.nodes.iter().zip(&before) {
        assert_ne!(&node.address, old, "node {} moved", node.id);
    }
    eprintln!(
        "three nodes moved in {:.1} s: {} -> {}",
        moves.as_secs_f64(),
        before.join(","),
        after.bootstrap
    );

    // metadata.recovery.strategy=none, meanwhile: the same moves left it
    // with no broker.
    let lost = {
        let stuck = stuck.clone();
        let record = records(&topic, 200, 1).next().unwrap();
        tokio::spawn(async move { stuck.send(record).await.unwrap().await })
    };

    // The default strategy: delivered again, by the same producer.
    let t = Instant::now();
    for r in records(&topic, 100, 30) {
        recovering.send(r).await.unwrap();
    }
    let delivered = tokio::time::timeout(BOUND, recovering.flush()).await;
    let produce_gap = t.elapsed();
    assert!(
        matches!(delivered, Ok(Ok(()))),
        "the rebootstrapping producer delivers within {BOUND:?} after every node moved: {:?}",
        delivered.map(|r| r.map_err(|u| u.to_string()))
    );
    let mut known: Vec<(i32, String)> = recovering
        .client()
        .metadata()
        .brokers
        .values()
        .map(|b| (b.id, b.address.to_string()))
        .collect();
    known.sort();
    let moved: Vec<(i32, String)> = after
        .nodes
        .iter()
        .map(|n| (n.id, n.address.clone()))
        .collect();
    assert_eq!(
        known, moved,
        "the old addresses are dropped, the new ones known"
    );

    // ...and read again, by the same consumer.
    let read_gap = read_until(&mut consumer, &mut read, 61, BOUND).await;
    assert_eq!(
        read.len(),
        61,
        "the consumer reads the records produced after the moves"
    );
    eprintln!(
        "after the moves: 30 records delivered in {:.2} s, read in {:.2} s more",
        produce_gap.as_secs_f64(),
        read_gap.as_secs_f64()
    );

    // ...while the one under none cannot deliver, and says why.
    let lost = lost.await.unwrap();
    assert!(lost.is_err(), "no broker to deliver to: {lost:?}");
    let err = stuck
        .client()
        .refresh_metadata(Some(&[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metadata.recovery.strategy=none") && err.contains("3 known brokers"),
        "{err}"
    );
    consumer.close(Duration::from_secs(2)).await;
    eprintln!(
        "strategy none: {err}; the test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
