//! Follower fetching (KIP-392) on the three-node cluster (racks r1..r3,
//! the rack-aware replica selector): issue 31's failing input 1.
//!
//! Before the fix a consumer sent its `client.rack` but never read the
//! leader's `preferred_read_replica`: a leader in another rack answered
//! with no records and the name of the follower in the consumer's rack,
//! and the consumer asked the leader again, forever. Two racks of three
//! read 0 of 6,000 records.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use consumer_core::Consumer;
use kafka_wire::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_wire::messages::{BrokerId, CreateTopicsRequest, TopicName};
use kafka_wire::{Client, CoordinatorKind, Lane, ProducerRecord, StrBytes};

const RECORDS: u32 = 6_000;
const PARTITIONS: i32 = 6;

/// `records` numbered records (value = number) in chunks of 100, each
/// chunk flushed before the next: batches of ~17 records per partition,
/// so a fetch of one batch per partition reads a small part of the log.
async fn produce_numbered(admin: &Client, env: &testkit::BrokerEnv, topic: &str, records: u32) {
    for chunk in (0..records).collect::<Vec<_>>().chunks(100) {
        testkit::produce(
            admin,
            env,
            chunk.iter().map(|i| {
                ProducerRecord::new(topic)
                    .key(format!("k{i}"))
                    .value(i.to_string())
            }),
        )
        .await;
    }
}

/// What a consumer read: the distinct values, how many arrived twice, and
/// the longest wait between two polls that returned records.
#[derive(Debug, Default)]
struct Read {
    values: BTreeSet<u32>,
    duplicates: usize,
    longest_gap: Duration,
}

impl Read {
    fn take(&mut self, consumer_batch: Vec<consumer_core::PartitionRecords>) -> usize {
        let mut n = 0;
        for batch in consumer_batch {
            for r in batch.records {
                let v: u32 = std::str::from_utf8(r.value.as_deref().unwrap_or_default())
                    .unwrap()
                    .parse()
                    .unwrap();
                if !self.values.insert(v) {
                    self.duplicates += 1;
                }
                n += 1;
            }
        }
        n
    }
}

/// A fresh group consumer of `topic` in rack `rack`.
async fn rack_consumer(
    env: &testkit::BrokerEnv,
    topic: &str,
    rack: &str,
    extra: &[(&str, &str)],
) -> Consumer {
    let group = testkit::unique_name(&format!("follower-fetch-{rack}"));
    let mut props = vec![("client.rack", rack), ("fetch.max.wait.ms", "100")];
    props.extend_from_slice(extra);
    let mut c = Consumer::connect(common::with(env, Some(&group), &props).build().unwrap())
        .await
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Read until every record arrived or `within` passed.
async fn read_all(c: &mut Consumer, within: Duration) -> Read {
    let end = Instant::now() + within;
    let mut read = Read::default();
    let mut last = None;
    while read.values.len() < RECORDS as usize && Instant::now() < end {
        let got = c.poll(Duration::from_millis(200)).await.unwrap();
        if read.take(got) > 0 {
            let now = Instant::now();
            if let Some(l) = last {
                read.longest_gap = read.longest_gap.max(now - l);
            }
            last = Some(now);
        }
    }
    read
}

/// Issue 31, failing input 1: six partitions, replication factor 3, 6,000
/// records; a fresh group consumer in each rack reads all 6,000. The
/// leaders of most partitions are in another rack than the consumer: they
/// name the follower in its rack and send nothing, so without following
/// `preferred_read_replica` racks r1 and r3 read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn a_consumer_in_every_rack_reads_all_6000_records() {
    let cluster = testkit::require_cluster!();
    let env = cluster.broker_env();
    let admin = testkit::client(&env).await;
    // The cluster's defaults: replication factor 3, min.insync.replicas 2.
    let topic = testkit::create_topic(&admin, "follower-fetch", PARTITIONS).await;
    let md = admin
        .refresh_metadata(Some(std::slice::from_ref(&topic)))
        .await
        .unwrap();
    let info = &md.topics[&topic];
    assert!(
        info.partitions.iter().all(|p| p.replicas.len() == 3),
        "every partition on every node: {:?}",
        info.partitions
    );
    produce_numbered(&admin, &env, &topic, RECORDS).await;

    // The three racks at once, each its own group.
    let mut readers = tokio::task::JoinSet::new();
    for node in &cluster.nodes {
        let mut c = rack_consumer(&env, &topic, &node.rack, &[]).await;
        let rack = node.rack.clone();
        readers.spawn(async move {
            let read = read_all(&mut c, Duration::from_secs(90)).await;
            c.close(Duration::from_secs(5)).await;
            (rack, read)
        });
    }
    let mut reads = readers.join_all().await;
    reads.sort_by(|a, b| a.0.cmp(&b.0));
    let counts: Vec<String> = reads
        .iter()
        .map(|(rack, r)| format!("{rack} read {} of {RECORDS}", r.values.len()))
        .collect();
    eprintln!("{}", counts.join(", "));
    for (rack, r) in &reads {
        assert_eq!(
            r.values.len(),
            RECORDS as usize,
            "the consumer in rack {rack} read {} of {RECORDS} ({})",
            r.values.len(),
            counts.join(", ")
        );
        assert_eq!(
            r.duplicates, 0,
            "rack {rack}: one member, no rebalance, no duplicate"
        );
    }
}

/// Issue 31, failing input 1, second half: the follower a consumer reads
/// from is killed (`kill -9`) in the middle of its backlog. The consumer
/// goes back to the partitions' leaders and finishes, every record once,
/// with no wait between two polls with records as long as one request
/// timeout.
///
/// The killed node leads no partition of the topic and is not the group's
/// coordinator: what is measured is the follower fallback alone (a
/// leader's or a coordinator's death are faults of their own). The leader
/// cannot know the follower died before the controller fences it
/// ([`FENCE`]): asked with the rack meanwhile it would name the dead
/// follower again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn a_killed_follower_sends_its_reader_back_to_the_leaders_without_a_stall() {
    let cluster = testkit::require_cluster!();
    let env = cluster.broker_env();
    let admin = testkit::client(&env).await;
    let group = testkit::unique_name("follower-kill");
    let coordinator = admin
        .find_coordinator(CoordinatorKind::Group, &group)
        .await
        .unwrap();
    let victim = cluster
        .nodes
        .iter()
        .rev()
        .find(|n| n.id != coordinator)
        .expect("three nodes, one coordinator")
        .clone();
    let leaders: Vec<i32> = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != victim.id)
        .collect();
    // Partition p led by leaders[p % 2]; the victim follows every one.
    let topic = testkit::unique_name("follower-kill");
    let assignments: Vec<Vec<i32>> = (0..PARTITIONS as usize)
        .map(|p| vec![leaders[p % 2], leaders[(p + 1) % 2], victim.id])
        .collect();
    create_topic_placed(&admin, &topic, &assignments).await;
    produce_numbered(&admin, &env, &topic, RECORDS).await;

    // Restarted whatever happens below: the next test wants three nodes.
    struct Restart(i32);
    impl Drop for Restart {
        fn drop(&mut self) {
            if let Err(e) = testkit::start_node(self.0) {
                eprintln!("restarting node {} failed: {e}", self.0);
            }
        }
    }

    let request_timeout = Duration::from_secs(10);
    let timeout_ms = request_timeout.as_millis().to_string();
    // One batch (~17 records) per partition and fetch, 20 records per poll
    // and 10 ms of "processing" each: the backlog takes seconds to read,
    // so the kill lands in its middle.
    let mut c = Consumer::connect(
        common::with(
            &env,
            Some(&group),
            &[
                ("client.rack", victim.rack.as_str()),
                ("fetch.max.wait.ms", "100"),
                ("max.partition.fetch.bytes", "1"),
                ("max.poll.records", "20"),
                ("request.timeout.ms", timeout_ms.as_str()),
            ],
        )
        .build()
        .unwrap(),
    )
    .await
    .unwrap();
    c.subscribe(&[&topic]).unwrap();

    let end = Instant::now() + Duration::from_secs(120);
    let mut read = Read::default();
    let mut last: Option<Instant> = None;
    let mut kill: Option<tokio::task::JoinHandle<(Instant, Instant)>> = None;
    let mut killed: Option<(Instant, Instant)> = None;
    let mut first_after_kill: Option<Duration> = None;
    let mut _restart = None;
    while read.values.len() < RECORDS as usize && Instant::now() < end {
        let got = c.poll(Duration::from_millis(200)).await.unwrap();
        let n = read.take(got);
        let now = Instant::now();
        if n > 0 {
            if let Some(l) = last {
                read.longest_gap = read.longest_gap.max(now - l);
            }
            last = Some(now);
            if let (Some((started, _)), None) = (killed, first_after_kill) {
                first_after_kill = Some(now - started);
            }
            // Simulated processing: paces the read (not a wait for a condition).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if kill.is_none() && read.values.len() >= RECORDS as usize / 4 {
            eprintln!(
                "read {} of {RECORDS}: killing node {} (rack {}), the follower being read",
                read.values.len(),
                victim.id,
                victim.rack
            );
            _restart = Some(Restart(victim.id));
            let id = victim.id;
            // Polling goes on while the xtask kills it.
            kill = Some(tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                testkit::kill_node(id).expect("kill the follower");
                (started, Instant::now())
            }));
        }
        if let Some(k) = kill
            .as_mut()
            .filter(|k| k.is_finished() && killed.is_none())
        {
            let (started, done) = k.await.unwrap();
            killed = Some((started, done));
            first_after_kill = None;
            eprintln!(
                "node {} killed ({:.2} s to run the kill), {} records read so far",
                victim.id,
                (done - started).as_secs_f64(),
                read.values.len()
            );
        }
    }
    c.close(Duration::from_secs(5)).await;
    let read_at_kill_end = killed.is_some();
    eprintln!(
        "read {} of {RECORDS}; longest gap between records {:.2} s; first records {:?} after the kill began",
        read.values.len(),
        read.longest_gap.as_secs_f64(),
        first_after_kill
    );
    assert!(
        read_at_kill_end,
        "the follower was killed while records remained"
    );
    assert_eq!(
        read.values.len(),
        RECORDS as usize,
        "every record, through the leaders after the follower died"
    );
    assert_eq!(read.duplicates, 0);
    assert!(
        first_after_kill.is_some(),
        "records arrived after the kill finished: the backlog was not read before it"
    );
    assert!(
        read.longest_gap < request_timeout,
        "longest gap between records {:?}, one request timeout is {request_timeout:?}",
        read.longest_gap
    );
    // Nor does it wait for the controller to fence the node: asking the
    // leaders with the rack until then (Java's way) measured an 8.2 s gap
    // here when the cluster fenced after Kafka's default 9 s; without the
    // rack, 0.04 s.
    assert!(
        read.longest_gap < FENCE / 2,
        "longest gap between records {:?}: the consumer waited for the dead follower to be \
         fenced ({FENCE:?}) instead of reading from the leaders at once",
        read.longest_gap
    );
}

/// The cluster's `broker.session.timeout.ms` (`xtask/src/cluster.rs`; 4 s,
/// Kafka's default is 9 s): a killed node is fenced, and out of every ISR,
/// this long after its last heartbeat.
const FENCE: Duration = Duration::from_secs(4);

/// Create `topic` with partition p on `assignments[p]` (the first broker
/// leads), and wait until every partition has its leader in the metadata
/// and every replica in sync.
pub(super) async fn create_topic_placed(admin: &Client, topic: &str, assignments: &[Vec<i32>]) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(
                assignments
                    .iter()
                    .enumerate()
                    .map(|(p, brokers)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(p as i32)
                            .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
                    })
                    .collect(),
            )]);
    let conn = admin.any_connection(Lane::Control).await.unwrap();
    let resp = conn
        .send(
            &req,
            admin.config().request_timeout,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    for t in &resp.topics {
        assert_eq!(t.error_code, 0, "create {topic}: {:?}", t.error_message);
    }
    let placed = testkit::eventually_async(Duration::from_secs(30), || async {
        let Ok(md) = admin.refresh_metadata(Some(&[topic.to_string()])).await else {
            return false;
        };
        md.topics.get(topic).is_some_and(|t| {
            t.partitions.len() == assignments.len()
                && t.partitions.iter().all(|p| {
                    let replicas = &assignments[p.partition as usize];
                    p.leader == replicas[0] && p.isr.len() == replicas.len()
                })
        })
    })
    .await;
    assert!(
        placed,
        "{topic}: every partition led by its first replica, all in sync"
    );
}
