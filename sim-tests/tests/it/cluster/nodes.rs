//! Which node is what (partition leaders, the group's coordinator, the
//! active controller, the brokers' settings), and the nodes' faults run
//! beside the load: the xtask's kill, stop and start on a blocking thread,
//! a guard that starts a node again whatever happens, and replicas moved
//! and leaders elected through the admin client (KIP-455, KIP-460).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_wire::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_wire::messages::{
    ApiKey, DescribeQuorumRequest, DescribeQuorumResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_wire::{
    Client, ConfigResource, CoordinatorKind, ElectionType, LeaderElection, PartitionInfo,
    PartitionReassignment, StrBytes, TopicPartition,
};

/// Nodes to start again whatever happens (a failed assertion too): the
/// next test wants three.
pub struct Restore(pub Vec<i32>);

impl Drop for Restore {
    fn drop(&mut self) {
        for &id in &self.0 {
            if let Err(e) = testkit::start_node(id) {
                eprintln!("restarting node {id} failed: {e}");
            }
        }
    }
}

/// Run `f` (a node's kill, stop or start through the xtask) on a blocking
/// thread; its time.
pub fn in_background(
    what: String,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> tokio::task::JoinHandle<Duration> {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        f().unwrap_or_else(|e| panic!("{what}: {e}"));
        t.elapsed()
    })
}

/// The leader of each partition of `topic`, fresh from the cluster.
pub async fn leaders(admin: &Client, topic: &str) -> BTreeMap<i32, i32> {
    let md = admin
        .refresh_metadata(Some(&[topic.to_string()]))
        .await
        .expect("metadata");
    md.topics[topic]
        .partitions
        .iter()
        .map(|p| (p.partition, p.leader))
        .collect()
}

/// Whether every partition of `topics` has a leader and all three
/// replicas in sync (no partition under-replicated).
pub async fn fully_replicated(admin: &Client, topics: &[String]) -> bool {
    let Ok(md) = admin.refresh_metadata(Some(topics)).await else {
        return false;
    };
    topics.iter().all(|t| {
        md.topics.get(t).is_some_and(|t| {
            !t.partitions.is_empty()
                && t.partitions
                    .iter()
                    .all(|p| p.leader >= 0 && p.isr.len() == p.replicas.len())
        })
    })
}

/// A new group name starting with `prefix` whose coordinator `wanted`
/// accepts (the coordinator follows from the name: the leader of the
/// name's `__consumer_offsets` partition).
///
/// # Panics
/// When none of 100 names has such a coordinator.
pub async fn group_coordinated(
    cluster: &testkit::ClusterEnv,
    prefix: &str,
    wanted: impl Fn(i32) -> bool,
) -> String {
    let admin = testkit::client(&cluster.broker_env()).await;
    for _ in 0..100 {
        let name = testkit::unique_name(prefix);
        if wanted(coordinator(&admin, &name).await) {
            return name;
        }
    }
    panic!("no group name of 100 has a coordinator as wanted");
}

/// A unique `transactional.id` starting with `prefix` whose transaction
/// coordinator is `wanted`.
pub async fn transaction_coordinated(
    cluster: &testkit::ClusterEnv,
    prefix: &str,
    wanted: i32,
) -> String {
    let admin = testkit::client(&cluster.broker_env()).await;
    for _ in 0..100 {
        let id = testkit::unique_name(prefix);
        let node = admin
            .find_coordinator(CoordinatorKind::Transaction, &id)
            .await
            .expect("find the transaction coordinator");
        if node == wanted {
            return id;
        }
    }
    panic!("no transactional.id of 100 has node {wanted} as its coordinator");
}

/// The node coordinating `group`.
pub async fn coordinator(admin: &Client, group: &str) -> i32 {
    admin
        .find_coordinator(CoordinatorKind::Group, group)
        .await
        .expect("find coordinator")
}

/// The active controller: the leader of the metadata log, by
/// DescribeQuorum (a broker forwards it to the controllers), asked of each
/// node in turn until one answers. Metadata's `controller_id` is a random
/// broker under KRaft, not the controller; the client does not send
/// DescribeQuorum, so it is written here, on a connection of its own.
pub async fn active_controller(cluster: &testkit::ClusterEnv) -> Option<i32> {
    for node in &cluster.nodes {
        let asked =
            tokio::time::timeout(Duration::from_secs(5), quorum_leader(&node.address)).await;
        if let Ok(Some(leader)) = asked {
            return Some(leader);
        }
    }
    None
}

/// The metadata log's leader, as the broker at `addr` reports it.
async fn quorum_leader(addr: &str) -> Option<i32> {
    use kafka_wire::{Decodable, Encodable};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const API: ApiKey = ApiKey::DescribeQuorum;
    const VERSION: i16 = 0;
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let header = RequestHeader::default()
        .with_request_api_key(55)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fault-suite")));
    let mut body = bytes::BytesMut::new();
    header
        .encode(&mut body, API.request_header_version(VERSION))
        .ok()?;
    req.encode(&mut body, VERSION).ok()?;
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let size = i32::try_from(body.len()).ok()?;
    s.write_all(&size.to_be_bytes()).await.ok()?;
    s.write_all(&body).await.ok()?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size).await.ok()?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .ok()
        .filter(|&n| n < 1 << 20)?;
    let mut buf = vec![0u8; size];
    s.read_exact(&mut buf).await.ok()?;
    let mut buf = bytes::Bytes::from(buf);
    ResponseHeader::decode(&mut buf, API.response_header_version(VERSION)).ok()?;
    let resp = DescribeQuorumResponse::decode(&mut buf, VERSION).ok()?;
    let leader = resp.topics.first()?.partitions.first()?.leader_id.0;
    (resp.error_code == 0 && leader >= 0).then_some(leader)
}

/// The cluster's `broker.session.timeout.ms`: a killed node is fenced (its
/// leaderships move, it leaves every ISR) this long after its last
/// heartbeat, and a restarted one is registered only then.
pub async fn broker_session(admin: &Client, node: i32) -> Duration {
    broker_config_ms(admin, node, "broker.session.timeout.ms").await
}

/// Node `node`'s setting `name`, a number of milliseconds.
pub async fn broker_config_ms(admin: &Client, node: i32, name: &str) -> Duration {
    let entries = admin
        .describe_configs(&ConfigResource::Broker(node))
        .await
        .expect("describe the broker's configs");
    let ms: u64 = entries
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} among node {node}'s configs"));
    Duration::from_millis(ms)
}

/// Each partition of `topic`: its leader, replicas and ISR, fresh from the
/// cluster.
pub async fn placement(admin: &Client, topic: &str) -> BTreeMap<i32, PartitionInfo> {
    let md = admin
        .refresh_metadata(Some(&[topic.to_string()]))
        .await
        .expect("metadata");
    md.topics[topic]
        .partitions
        .iter()
        .map(|p| (p.partition, p.clone()))
        .collect()
}

/// Move each partition to its target (AlterPartitionReassignments) and
/// wait until each move is done: no longer listed as under way, the
/// replicas the target, all of them in sync. Returns how long it took.
///
/// # Panics
/// When the controller refuses a target, or a move is not done in 60 s.
pub async fn reassign(admin: &Client, moves: &[(TopicPartition, Vec<i32>)]) -> Duration {
    let t = Instant::now();
    let changes: Vec<PartitionReassignment> = moves
        .iter()
        .map(|(tp, to)| PartitionReassignment::to(tp.clone(), to.clone()))
        .collect();
    let answers = admin
        .alter_partition_reassignments(&changes)
        .await
        .expect("AlterPartitionReassignments");
    for (tp, answer) in &answers {
        if let Err(e) = answer {
            panic!("the controller refused to move {tp}: {e}");
        }
    }
    let tps: Vec<TopicPartition> = moves.iter().map(|(tp, _)| tp.clone()).collect();
    let mut topics: Vec<String> = tps.iter().map(|tp| tp.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    let last_seen = std::sync::Mutex::new(String::new());
    let done = testkit::eventually_async(Duration::from_secs(60), || async {
        let Ok(ongoing) = admin.list_partition_reassignments(Some(&tps)).await else {
            return false;
        };
        let Ok(md) = admin.refresh_metadata(Some(&topics)).await else {
            return false;
        };
        let settled = moves.iter().all(|(tp, to)| {
            md.partition(&tp.topic, tp.partition).is_some_and(|p| {
                !ongoing.contains_key(tp)
                    && p.replicas == *to
                    && to.iter().all(|r| p.isr.contains(r))
                    && p.leader >= 0
            })
        });
        *last_seen.lock().expect("lock") = format!("under way {ongoing:?}");
        settled
    })
    .await;
    assert!(
        done,
        "the moves {moves:?} are not done 60 s after the controller took them: {}",
        last_seen.into_inner().expect("lock")
    );
    t.elapsed()
}

/// Elect the preferred leader (the first replica) of each of `tps`
/// (ElectLeaders) and wait until the metadata shows it leading. Returns
/// how many partitions changed leader.
///
/// # Panics
/// When the controller refuses an election, or the metadata does not show
/// the preferred leaders within 30 s.
pub async fn elect_preferred(admin: &Client, tps: &[TopicPartition]) -> usize {
    let results = admin
        .elect_leaders(ElectionType::Preferred, Some(tps))
        .await
        .expect("ElectLeaders");
    let mut elected = 0;
    for (tp, r) in &results {
        match r {
            LeaderElection::Elected => elected += 1,
            LeaderElection::NotNeeded => {}
            LeaderElection::Failed(e) => panic!("no preferred leader for {tp}: {e}"),
        }
    }
    let mut topics: Vec<String> = tps.iter().map(|tp| tp.topic.clone()).collect();
    topics.sort();
    topics.dedup();
    let preferred = testkit::eventually_async(Duration::from_secs(30), || async {
        let Ok(md) = admin.refresh_metadata(Some(&topics)).await else {
            return false;
        };
        tps.iter().all(|tp| {
            md.partition(&tp.topic, tp.partition)
                .is_some_and(|p| p.replicas.first() == Some(&p.leader))
        })
    })
    .await;
    assert!(
        preferred,
        "the preferred replicas of {tps:?} do not lead 30 s after the election"
    );
    elected
}

/// The `__consumer_offsets` partition that holds `group` (so its
/// coordinator is that partition's leader): Java's `String.hashCode` of
/// the name, made non-negative, modulo `partitions`, as the broker
/// computes it.
pub fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}
